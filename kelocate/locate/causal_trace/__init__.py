"""Causal tracing (ROME, Meng et al. 2022): where does restoring clean states bring the answer back?

`tracing.trace` is the entry point; `problem.py` states the semantics, `engine.py` is the exact fast
engine, `oracle.py` the plain reference loops, `result.py` the result, `noise.py` the corruption,
`subject.py` subject inference and `average.py` averages over many facts.
"""

from kelocate.locate.causal_trace.result import TraceResult
from kelocate.locate.causal_trace.tracing import TraceSettings, check_options, parse_kinds, parse_severed, trace

__all__ = ["TraceResult", "TraceSettings", "check_options", "parse_kinds", "parse_severed", "trace"]
