"""The plugin registry: discovery, load-time verification, settings errors, build-time checks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, Field

import guardrails as gr

BUILT_INS = {"pii", "deny_list", "regex", "size_limit", "json_schema", "rate_limit",
             "invariants", "drift_budget", "update_rate_limit", "provenance"}

Register = Callable[[str, str], None]


class Settings(gr.RuntimePolicySettings):
    limit: int = 1


class Nested(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    pattern: str
    weight: float = 1.0


class NestedSettings(gr.PluginSettings):
    rules: tuple[Nested, ...] = ()
    threshold: float = 0.5


def echo(request: gr.Request, call_next: Callable[[gr.Request], gr.Response]) -> gr.Response:
    return call_next(request)


def echo_parts(settings: Any) -> gr.PluginParts:
    return gr.PluginParts(middleware=[echo])


def plugin_with(factory: Callable[[Any], gr.PluginParts], provides: set[str] | None = None,
                settings: type[BaseModel] = Settings) -> gr.Plugin[Any]:
    return gr.Plugin(name="probe", settings=settings, factory=factory,
                     provides=provides or {"middleware"})  # type: ignore[arg-type]


# -- discovery ---------------------------------------------------------------------------


def test_every_built_in_plugin_is_discovered_through_entry_points() -> None:
    """The built-ins are found through the guardrails.plugins group and all load."""
    infos = gr.installed_plugins()
    assert set(infos) >= BUILT_INS
    assert all(infos[name].loaded for name in BUILT_INS)


def test_installed_plugins_describe_provides_and_settings_schema() -> None:
    """Each loaded plugin reports its facets, distribution and the JSON schema of its settings."""
    info = gr.installed_plugins()["pii"]
    assert info.provides == ("middleware",)
    assert info.distribution == "guardrails-middleware"
    assert info.entry_point == "guardrails_plugins.policies.pii:plugin"
    assert info.settings_schema is not None and "placeholder" in info.settings_schema["properties"]


def test_load_plugin_returns_the_registered_plugin_object() -> None:
    """load_plugin(name) resolves the entry point to its Plugin."""
    plugin = gr.load_plugin("size_limit")
    assert isinstance(plugin, gr.Plugin)
    assert plugin.name == "size_limit"


def test_unknown_plugin_lists_the_installed_ones() -> None:
    """An unknown name is a PluginError listing every installed plugin."""
    with pytest.raises(gr.PluginError) as caught:
        gr.load_plugin("no_such_plugin")
    assert "unknown plugin 'no_such_plugin'" in str(caught.value)
    for name in BUILT_INS:
        assert name in str(caught.value)


def test_unknown_plugin_suggests_a_close_name() -> None:
    """A typo of an installed name gets a "did you mean" suggestion."""
    with pytest.raises(gr.PluginError, match="did you mean 'deny_list'"):
        gr.load_plugin("deny_lst")


def test_plugin_raising_at_import_is_named(register: Register) -> None:
    """A plugin module that raises on import is a PluginError naming plugin and target."""
    register("fault_import", "plugin_faults_import:plugin")
    with pytest.raises(gr.PluginError) as caught:
        gr.load_plugin("fault_import")
    message = str(caught.value)
    assert "plugin 'fault_import' (plugin_faults_import:plugin) failed to load" in message
    assert "import-time failure" in message
    assert caught.value.plugin == "fault_import"


def test_entry_point_may_be_a_factory_returning_a_plugin(register: Register) -> None:
    """A zero-argument factory is called at load and must return a Plugin."""
    register("fault_factory", "plugin_faults:make_good")
    assert gr.load_plugin("fault_factory").name == "fault_factory"


def test_factory_raising_at_load_is_named(register: Register) -> None:
    """A factory entry point that raises is a PluginError naming the plugin."""
    register("fault_factory_raises", "plugin_faults:factory_raises")
    with pytest.raises(gr.PluginError, match=r"'fault_factory_raises'.*factory exploded"):
        gr.load_plugin("fault_factory_raises")


def test_entry_point_to_something_else_is_refused(register: Register) -> None:
    """An entry point that is neither a Plugin nor a factory is refused at load."""
    register("fault_int", "plugin_faults:not_a_plugin")
    with pytest.raises(gr.PluginError, match=r"not a guardrails\.Plugin"):
        gr.load_plugin("fault_int")


def test_plugin_must_be_registered_under_its_own_name(register: Register) -> None:
    """The entry point's name and the plugin's name must agree."""
    register("fault_alias", "plugin_faults:wrong_name")
    with pytest.raises(gr.PluginError, match="named 'some_other_name'"):
        gr.load_plugin("fault_alias")


def test_a_name_registered_twice_is_refused(register: Register) -> None:
    """Two targets under one name are refused, so a plugin cannot shadow a built-in."""
    register("pii", "plugin_faults:good")
    with pytest.raises(gr.PluginError, match="registered more than once"):
        gr.load_plugin("pii")


def test_installed_plugins_reports_a_broken_plugin_without_raising(register: Register) -> None:
    """A plugin that fails to load shows its error in installed_plugins; the others still load."""
    register("fault_import", "plugin_faults_import:plugin")
    infos = gr.installed_plugins()
    assert not infos["fault_import"].loaded
    assert "import-time failure" in (infos["fault_import"].error or "")
    assert infos["pii"].loaded


# -- shape verified when the plugin is constructed (that is, loaded) -----------------------


def test_plugin_name_must_be_lower_case_identifier() -> None:
    """A name with capitals or spaces is refused at construction."""
    with pytest.raises(gr.PluginError, match="name 'Bad Name' is invalid"):
        gr.Plugin(name="Bad Name", settings=Settings, factory=echo_parts, provides={"middleware"})


def test_settings_must_be_a_pydantic_model() -> None:
    """A settings class that is not a pydantic model is refused."""
    with pytest.raises(gr.PluginError, match="settings must be a pydantic model class"):
        gr.Plugin(name="probe", settings=dict, factory=echo_parts,  # type: ignore[type-var]
                  provides={"middleware"})


def test_settings_must_forbid_unknown_keys() -> None:
    """A settings model that ignores unknown keys is refused: typos must not pass silently."""
    class Lax(BaseModel):
        on_error: str = "block"

    with pytest.raises(gr.PluginError, match="accepts unknown keys"):
        gr.Plugin(name="probe", settings=Lax, factory=echo_parts, provides={"middleware"})


def test_factory_must_take_exactly_the_settings() -> None:
    """A factory that cannot be called with one argument is refused at construction."""
    def no_args() -> gr.PluginParts:
        return gr.PluginParts()

    with pytest.raises(gr.PluginError, match="does not accept exactly one argument"):
        gr.Plugin(name="probe", settings=Settings, factory=no_args,  # type: ignore[arg-type]
                  provides={"middleware"})


def test_provides_must_name_known_facets() -> None:
    """provides must be a non-empty set of middleware, checks, checkers, adapters."""
    with pytest.raises(gr.PluginError, match="provides="):
        gr.Plugin(name="probe", settings=Settings, factory=echo_parts,
                  provides={"widgets"})  # type: ignore[arg-type]


def test_runtime_plugin_needs_an_on_error_setting() -> None:
    """A plugin providing middleware must let the operator choose on_error."""
    with pytest.raises(gr.PluginError, match="need an 'on_error' field"):
        gr.Plugin(name="probe", settings=NestedSettings, factory=echo_parts,
                  provides={"middleware"})


# -- settings --------------------------------------------------------------------------------


def test_settings_default_when_none_given() -> None:
    """build() with no settings uses the model's defaults."""
    parts = plugin_with(echo_parts).build()
    assert len(parts.middleware) == 1


def test_unknown_setting_suggests_the_close_one() -> None:
    """An unknown key names the plugin, the key, the closest known key and all known keys."""
    with pytest.raises(gr.PluginError) as caught:
        plugin_with(echo_parts).build({"limt": 3})
    error = caught.value
    assert str(error) == ("plugin 'probe': setting 'limt': unknown setting; did you mean "
                          "'limit'? (known: limit, on_error)")
    assert error.setting == "limt"


def test_nested_setting_errors_carry_their_path() -> None:
    """An error inside a list of tables names the full path, e.g. rules[1].pattern."""
    plugin = plugin_with(lambda s: gr.PluginParts(checks=[]), {"checks"}, NestedSettings)
    with pytest.raises(gr.PluginError) as caught:
        plugin.build({"rules": [{"pattern": "a"}, {"weight": 2}]})
    assert caught.value.setting == "rules[1].pattern"
    assert "required setting is missing" in str(caught.value)


def test_nested_unknown_setting_suggests_from_the_nested_model() -> None:
    """"Did you mean" looks at the keys of the nested table, not the top level."""
    plugin = plugin_with(lambda s: gr.PluginParts(checks=[]), {"checks"}, NestedSettings)
    with pytest.raises(gr.PluginError, match="did you mean 'pattern'"):
        plugin.build({"rules": [{"patern": "a"}]})


def test_every_bad_setting_is_listed() -> None:
    """Several problems are all reported, one per line, in PluginError.problems too."""
    with pytest.raises(gr.PluginError) as caught:
        plugin_with(echo_parts).build({"limit": "many", "on_error": "ignore"})
    assert len(caught.value.problems) == 2
    assert "2 invalid settings" in str(caught.value)


def test_settings_must_be_a_mapping() -> None:
    """A non-table settings value is a PluginError, not a crash."""
    with pytest.raises(gr.PluginError, match="settings must be a table"):
        plugin_with(echo_parts).build(["limit", 3])  # type: ignore[arg-type]


def test_a_validated_settings_object_is_accepted() -> None:
    """build() accepts an instance of the plugin's own settings model."""
    parts = plugin_with(echo_parts).build(Settings(limit=5))
    assert len(parts.middleware) == 1


def test_another_models_settings_object_is_refused() -> None:
    """An instance of some other settings model is refused by name."""
    with pytest.raises(gr.PluginError, match="takes Settings settings, got NestedSettings"):
        plugin_with(echo_parts).build(NestedSettings())


# -- what the factory returns --------------------------------------------------------------


def test_factory_raising_at_build_is_named(register: Register) -> None:
    """A factory that raises while building is a PluginError naming the plugin."""
    register("fault_build", "plugin_faults:build_raises")
    with pytest.raises(gr.PluginError, match="plugin 'fault_build' failed to build: "
                                             "RuntimeError: cannot build"):
        gr.load_plugin("fault_build").build({})


def test_factory_config_error_is_prefixed_with_the_plugin() -> None:
    """A ConfigError from the factory keeps its message, prefixed with the plugin name."""
    def refuses(settings: Settings) -> gr.PluginParts:
        raise gr.ConfigError("the schema file is missing")

    with pytest.raises(gr.PluginError, match=r"^plugin 'probe': the schema file is missing$"):
        plugin_with(refuses).build()


def test_factory_must_return_plugin_parts() -> None:
    """A factory returning something else is refused."""
    with pytest.raises(gr.PluginError, match="returned list, not PluginParts"):
        plugin_with(lambda s: [echo]).build()  # type: ignore[arg-type,return-value]


def test_parts_must_match_the_declared_facets() -> None:
    """Contributing a facet the plugin did not declare is refused."""
    class Check:
        name = "c"

        def __call__(self, context: gr.ReviewContext) -> list[gr.Finding]:
            return []

    with pytest.raises(gr.PluginError, match="returned checks but declares"):
        plugin_with(lambda s: gr.PluginParts(checks=[Check()])).build()


def test_middleware_must_take_request_and_call_next() -> None:
    """A middleware with the wrong signature is refused at build, naming the plugin."""
    def one_arg(request: gr.Request) -> gr.Response:
        raise AssertionError

    with pytest.raises(gr.PluginError, match=r"plugin 'probe'.*does not accept"):
        plugin_with(lambda s: gr.PluginParts(middleware=[one_arg])).build()


def test_update_check_needs_a_name() -> None:
    """An update check without a name is refused at build."""
    with pytest.raises(gr.PluginError, match="has no 'name'"):
        plugin_with(lambda s: gr.PluginParts(checks=[lambda context: []]),  # type: ignore[list-item]
                    {"checks"}).build()


def test_checker_must_be_a_checker_class_under_its_own_name() -> None:
    """Canary checkers are Checker subclasses registered under their own name."""
    with pytest.raises(gr.PluginError, match="registered as 'other'"):
        plugin_with(lambda s: gr.PluginParts(checkers={"other": gr.Equals}), {"checkers"}).build()
    with pytest.raises(gr.PluginError, match=r"must be a subclass of guardrails\.Checker"):
        plugin_with(lambda s: gr.PluginParts(checkers={"x": object}),  # type: ignore[dict-item]
                    {"checkers"}).build()


def test_adapters_must_be_callables() -> None:
    """An adapter that is not callable is refused at build."""
    with pytest.raises(gr.PluginError, match="adapter 'x' must be a callable"):
        plugin_with(lambda s: gr.PluginParts(adapters={"x": 3}),  # type: ignore[dict-item]
                    {"adapters"}).build()


def test_parts_are_copied_so_the_factory_cannot_change_them_later() -> None:
    """PluginParts keeps its own copies of what it was given."""
    middleware = [echo]
    parts = gr.PluginParts(middleware=middleware)
    middleware.append(echo)
    assert len(parts.middleware) == 1


# -- merging --------------------------------------------------------------------------------


def test_merge_parts_keeps_order() -> None:
    """merge_parts concatenates middleware and checks in plugin order."""
    first, second = gr.PluginParts(middleware=[echo]), gr.PluginParts(middleware=[echo, echo])
    merged = gr.merge_parts([("a", first), ("b", second)])
    assert len(merged.middleware) == 3


def test_merge_parts_refuses_two_checkers_with_one_name() -> None:
    """Two plugins contributing the same checker name is a ConfigError naming both."""
    parts = gr.PluginParts(checkers={"equals": gr.Equals})
    with pytest.raises(gr.ConfigError, match="plugins 'a' and 'b' both provide a checker named "
                                              "'equals'"):
        gr.merge_parts([("a", parts), ("b", parts)])


def test_rule_over_the_whole_settings_has_no_setting_path() -> None:
    """An error from a whole-model rule reads as the rule, with setting None."""
    with pytest.raises(gr.PluginError) as caught:
        gr.load_plugin("size_limit").build({})
    assert str(caught.value) == ("plugin 'size_limit': set max_input_chars, max_output_chars "
                                 "or both")
    assert caught.value.setting is None


def test_table_keys_that_are_not_bare_are_quoted_in_the_path() -> None:
    """A bad value under a key like "/prompt" is reported as pointers."/prompt"."""
    class Budgets(gr.PluginSettings):
        pointers: dict[str, float] = Field(default_factory=dict)

    plugin = plugin_with(lambda s: gr.PluginParts(checks=[]), {"checks"}, Budgets)
    with pytest.raises(gr.PluginError) as caught:
        plugin.build({"pointers": {"/prompt": "lots"}})
    assert caught.value.setting == 'pointers."/prompt"'
