"""Adapter for DSPy programs: an optimiser's ``compile`` result is a gated candidate.

The state of a ``DSPyProgramClient`` is the program's saved state (what
``program.dump_state()`` returns: per predictor, its instructions, fields and
demos)::

    {"module": "my_app.QA", "program": {"traces": [], "train": [], "demos": [...],
                                        "signature": {"instructions": "...", ...}, "lm": null}}

``propose_update()`` runs the optimiser (any DSPy teleprompter, e.g.
``dspy.LabeledFewShot`` or ``dspy.BootstrapFewShot``) on a *copy* of the
program, and proposes the recompiled state as a JSON Patch; the guard
evaluates the recompiled program on its canaries before it replaces the
serving one. ``proposal_for(compiled)`` does the same for a program the
application compiled itself.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import dspy

import guardrails as gr

from . import require
from ._adapting import (
    GENAI_OPERATION,
    GENAI_PROVIDER,
    GENAI_REQUEST_MODEL,
    UsageRecorder,
    proposal_between,
    unusable,
    usable_json,
)

__all__ = ["DSPyProgramClient"]


def _qualname(obj: Any) -> str:
    kind = type(obj)
    return f"{kind.__module__}.{kind.__qualname__}"


def _kind(patch: Sequence[Mapping[str, Any]]) -> str:
    paths = [str(op["path"]) for op in patch]
    if all("/demos" in p for p in paths):
        return "demos"
    if all("/signature" in p for p in paths):
        return "prompt"
    return "program"


def _jsonable(value: Any) -> Any:
    """A prediction field as JSON (pydantic models dumped, anything else ``str``)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return _jsonable(dump(mode="json"))
    return str(value)


def _usable_fields(fields: dict[str, Any], output_field: str | None) -> dict[str, Any]:
    """The prediction fields the answer is made of, each present and not empty; else
    ``UnusableResponseError`` (``no_answer``, ``missing_field``, ``empty_field``)."""
    if not fields:
        raise unusable("dspy", "no_answer", "the prediction has no fields")
    if output_field is not None:
        if output_field not in fields:
            raise unusable("dspy", "missing_field",
                           f"the prediction has no field {output_field!r} "
                           f"(it has {', '.join(map(repr, sorted(fields)))})")
        fields = {output_field: fields[output_field]}
    for name, value in fields.items():
        if value is None or (isinstance(value, str) and not value.strip()):
            raise unusable("dspy", "empty_field",
                           f"prediction field {name!r} is "
                           + ("None" if value is None else "empty or blank"))
    return fields


class DSPyProgramClient:
    """A DSPy program (``dspy.Module``) as a ``SelfUpdatingClient``.

    ``lm``: the language model the program runs with (``dspy.context(lm=...)``;
    default: the globally configured one). ``adapter``: an optional DSPy
    adapter for the same context. ``optimizer`` and ``trainset``: the
    teleprompter ``propose_update`` compiles with, and its training examples
    (``compile_kwargs`` are passed on). ``output_field``: return only that
    field of the prediction (default: every field as a dict).
    ``input_field``: the field a string input goes to (default: the single
    input field of the program's first predictor).

    ``invoke(request)``: ``request.input`` is a dict of input fields, or a
    string for a program with one input field. A prediction without the
    answer (no fields, ``output_field`` missing, a field that is ``None``,
    empty or blank, a NaN) raises ``guardrails.UnusableResponseError``.
    """

    def __init__(self, program: Any, *, lm: Any = None, adapter: Any = None,
                 optimizer: Any = None, trainset: Sequence[Any] = (),
                 compile_kwargs: Mapping[str, Any] | None = None,
                 output_field: str | None = None, input_field: str | None = None,
                 meter_provider: Any = None) -> None:
        require(program, "dspy")
        if optimizer is not None and not callable(getattr(optimizer, "compile", None)):
            raise gr.ConfigError(f"optimizer {optimizer!r} has no compile(student, trainset=...); "
                                 "give a DSPy teleprompter such as dspy.BootstrapFewShot")
        self._template = program.deepcopy()
        self._program = program.deepcopy()
        self.lm = lm
        self.adapter = adapter
        self.optimizer = optimizer
        self.trainset = list(trainset)
        self.compile_kwargs = dict(compile_kwargs or {})
        self.output_field = output_field
        self.input_field = input_field or self._single_input_field()
        self._usage = UsageRecorder(meter_provider)
        self._module = _qualname(program)
        self._state = self._read_state(self._program)

    def _single_input_field(self) -> str | None:
        predictors = list(self._program.named_predictors())
        if not predictors:
            return None
        fields = list(predictors[0][1].signature.input_fields)
        return fields[0] if len(fields) == 1 else None

    def _read_state(self, program: Any) -> dict[str, Any]:
        state = {"module": self._module, "program": program.dump_state()}
        try:
            gr.canonical_json(state)
        except gr.ConfigError as exc:
            raise ValueError(f"the program's saved state is not JSON ({exc}); demos must hold "
                             "JSON values") from None
        return state

    def _context(self) -> Any:
        overrides: dict[str, Any] = {"track_usage": True}
        if self.lm is not None:
            overrides["lm"] = self.lm
        if self.adapter is not None:
            overrides["adapter"] = self.adapter
        return dspy.context(**overrides)

    # -- the protocol -------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The program's saved state as it is now (a silent edit of demos shows up)."""
        return self._read_state(self._program)

    def with_state(self, state: dict[str, Any]) -> DSPyProgramClient:
        """A new client on a fresh copy of the program loaded with ``state``; ``self`` is untouched.

        Raises ``ValueError`` when the state is for another module or does not
        load back exactly (an unknown predictor, a malformed signature).
        """
        if not isinstance(state, Mapping) or set(state) != {"module", "program"}:
            raise ValueError("a DSPy program state has exactly the keys 'module' and 'program'")
        if state["module"] != self._module:
            raise ValueError(f"state is for module {state['module']!r}, this client serves "
                             f"{self._module!r}")
        program = self._template.deepcopy()
        try:
            program.load_state(copy.deepcopy(state["program"]))
        except Exception as exc:
            raise ValueError(f"the program state does not load: {type(exc).__name__}: {exc}") from None
        clone = object.__new__(DSPyProgramClient)
        clone.__dict__.update(self.__dict__)
        clone._program = program
        clone._state = clone._read_state(program)
        if gr.canonical_json(clone._state) != gr.canonical_json(dict(state)):
            raise ValueError("the program state does not round-trip through load_state/dump_state; "
                             "it has keys or values this program does not keep")
        return clone

    @property
    def program(self) -> Any:
        """The program serving this state (do not mutate it: use proposals)."""
        return self._program

    def _inputs(self, value: Any) -> dict[str, Any]:
        if isinstance(value, Mapping):
            return dict(value)
        if isinstance(value, str) and self.input_field is not None:
            return {self.input_field: value}
        raise ValueError("a DSPy request input is a dict of input fields"
                         + ("" if self.input_field else
                            " (this program has several input fields, so a string does not do; "
                            "or give input_field=...)")
                         + f"; got {type(value).__name__}")

    def _answer(self, prediction: Any) -> Any:
        self._record_usage(prediction)
        if prediction is None:
            raise unusable("dspy", "no_answer", "the program returned None, not a prediction")
        fields = dict(prediction.items()) if hasattr(prediction, "items") else {"output": prediction}
        chosen = _usable_fields(fields, self.output_field)
        if self.output_field is not None:
            return usable_json("dspy", _jsonable(chosen[self.output_field]),
                               f"prediction field {self.output_field!r}")
        return usable_json("dspy", _jsonable(chosen))

    def invoke(self, request: gr.Request) -> Any:
        inputs = self._inputs(request.input)
        with self._context():
            return self._answer(self._program(**inputs))

    async def ainvoke(self, request: gr.Request) -> Any:
        inputs = self._inputs(request.input)
        with self._context():
            return self._answer(await self._program.acall(**inputs))

    def propose_update(self) -> gr.UpdateProposal | None:
        """Compile a copy of the program with the optimiser; propose the result (or ``None``)."""
        if self.optimizer is None or not self.trainset:
            return None
        student = self._template.deepcopy()
        student.load_state(copy.deepcopy(self._state["program"]))
        with self._context():
            compiled = self.optimizer.compile(student, trainset=self.trainset, **self.compile_kwargs)
        name = type(self.optimizer).__name__
        return self.proposal_for(compiled, source=f"dspy.{name}",
                                 rationale=f"recompiled with {name} on {len(self.trainset)} "
                                           "training examples")

    def proposal_for(self, compiled: Any, *, rationale: str = "", source: str = "optimizer"
                     ) -> gr.UpdateProposal | None:
        """The proposal replacing this program's state with ``compiled``'s (``None`` if equal)."""
        require(compiled, "dspy")
        if _qualname(compiled) != self._module:
            raise gr.ConfigError(f"the compiled program is a {_qualname(compiled)}, this client "
                                 f"serves {self._module}")
        parent = self.snapshot()
        proposal = proposal_between(parent, {"module": self._module,
                                             "program": compiled.dump_state()},
                                    rationale=rationale, source=source)
        if proposal is None:
            return None
        return proposal.model_copy(update={"kind": _kind(proposal.patch_json())})

    # -- telemetry ------------------------------------------------------------------------

    def _lm(self) -> Any:
        return self.lm if self.lm is not None else dspy.settings.lm

    def genai_attributes(self) -> dict[str, Any]:
        lm = self._lm()
        model = str(getattr(lm, "model", None) or "unknown")
        return {GENAI_OPERATION: "invoke_agent", GENAI_PROVIDER: "dspy",
                GENAI_REQUEST_MODEL: model, "gen_ai.agent.name": self._module}

    def _record_usage(self, prediction: Any) -> None:
        get = getattr(prediction, "get_lm_usage", None)
        usage = get() if callable(get) else None
        if not usage:
            return
        totals = [u for u in usage.values() if isinstance(u, Mapping)]
        model = str(getattr(self._lm(), "model", None) or "unknown")
        self._usage.record(f"invoke_agent {model}", self.genai_attributes(),
                           input_tokens=sum(int(u.get("prompt_tokens") or 0) for u in totals),
                           output_tokens=sum(int(u.get("completion_tokens") or 0) for u in totals))
