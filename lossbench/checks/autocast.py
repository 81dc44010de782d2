"""CUDA's autocast op policy, emulated on any device, and which op a bf16 error comes from.

Under ``torch.autocast("cuda", dtype=torch.bfloat16)`` some ops run in bf16 whatever their
inputs (matmuls, ``einsum``, ``linear``), some in float32 (``exp``, ``log_softmax``, ``sum``,
losses), and some cast their inputs to the widest one (``scatter_add``, ``index_put``, ``dot``).
CPU autocast follows a different, shorter policy, so a loss that is exact under CUDA autocast
looks wrong under CPU autocast, and emulating only the float32 list hands a bf16 ``einsum`` a
float32 operand, a dtype error CUDA never raises. :class:`CudaAutocastPolicy` applies all three
lists at the Python API level. The lists are read from torch's own autocast test lists for the
installed version (``torch/testing/_internal/autocast_test_lists.py``, parsed, not imported:
it imports test-only packages), plus Python-level composites whose aten decomposition reaches
those ops (``F.cross_entropy`` is ``log_softmax`` + ``nll_loss``).
"""

from __future__ import annotations

import ast
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
from torch.overrides import TorchFunctionMode

from .numerics import _tensors

_TORCH_DIR = str(Path(torch.__file__).resolve().parent)
_CHECKS_DIR = str(Path(__file__).resolve().parent)

# Python-level functions torch's lists do not name because autocast sees their aten pieces.
_FP32_COMPOSITES = frozenset(["__rdiv__", "__rpow__", "__rtruediv__", "cross_entropy", "softmin", "normalize", "nll_loss2d", "binary_cross_entropy_with_logits", "kl_div", "log_softmax", "softmax", "logsumexp"])
_LOWER_COMPOSITES = frozenset(["__matmul__", "__rmatmul__", "inner"])
# Used when torch's test lists are missing (a stripped install): the documented lists.
_FALLBACK = {
    "lower": """_convolution conv1d conv2d conv3d conv_tbc conv_transpose1d conv_transpose2d
        conv_transpose3d convolution prelu addmm addmv addr matmul einsum mm mv chain_matmul
        addbmm baddbmm bmm linear linalg_vecdot linalg_multi_dot""",
    "fp32": """acos asin cosh erfinv exp expm1 log log10 log2 log1p reciprocal rsqrt sinh tan pow
        softmax log_softmax layer_norm group_norm norm cosine_similarity poisson_nll_loss
        cosine_embedding_loss hinge_embedding_loss kl_div margin_ranking_loss
        triplet_margin_loss binary_cross_entropy_with_logits cumprod cumsum dist pdist cdist
        prod renorm sum logsumexp softplus nll_loss l1_loss smooth_l1_loss mse_loss
        multilabel_margin_loss soft_margin_loss multi_margin_loss __pow__""",
    "promote": """addcdiv addcmul atan2 bilinear cross dot vdot grid_sampler index_put tensordot
        scatter_add""",
}
_GROUPS = {"lower": ("torch_fp16", "nn_fp16", "linalg_fp16", "methods_fp16"),
           "fp32": ("torch_fp32", "nn_fp32", "methods_fp32"),
           "promote": ("torch_need_autocast_promote",)}


@dataclass(frozen=True)
class OpLists:
    lower: frozenset[str]  # run in the autocast dtype
    fp32: frozenset[str]  # run in float32
    promote: frozenset[str]  # inputs cast to the widest floating dtype among them
    source: str  # where the lists came from, for messages


def _parse_test_lists(path: Path) -> dict[str, set[str]] | None:
    """{list name: op names} from AutocastTestLists.__init__ (CUDA's lists), or None."""
    try:
        tree = ast.parse(path.read_text())
    except (OSError, SyntaxError):
        return None
    found: dict[str, set[str]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == "AutocastTestLists":
            for stmt in ast.walk(node):
                if (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
                        and isinstance(stmt.targets[0], ast.Attribute)
                        and isinstance(stmt.value, ast.List)):
                    names = {e.elts[0].value for e in stmt.value.elts
                             if isinstance(e, ast.Tuple) and e.elts
                             and isinstance(e.elts[0], ast.Constant)
                             and isinstance(e.elts[0].value, str)}
                    found[stmt.targets[0].attr] = names
    return found or None


@lru_cache(maxsize=1)
def cuda_op_lists() -> OpLists:
    """CUDA autocast's three lists for the installed torch (see the module docstring)."""
    path = Path(_TORCH_DIR) / "testing" / "_internal" / "autocast_test_lists.py"
    parsed = _parse_test_lists(path)
    if parsed is not None and all(any(n in parsed for n in names) for names in _GROUPS.values()):
        lists = {group: set().union(*(parsed.get(n, set()) for n in names))
                 for group, names in _GROUPS.items()}
        source = f"torch {torch.__version__}'s autocast test lists"
    else:
        lists = {group: set(text.split()) for group, text in _FALLBACK.items()}
        source = "the documented CUDA autocast lists (torch's test lists not found)"
    return OpLists(frozenset(lists["lower"] | _LOWER_COMPOSITES),
                   frozenset((lists["fp32"] | _FP32_COMPOSITES) - lists["lower"]),
                   frozenset(lists["promote"]), source)


def _cast(obj, rule):
    if isinstance(obj, torch.Tensor):
        return rule(obj)
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cast(x, rule) for x in obj)
    if isinstance(obj, dict):
        return {k: _cast(v, rule) for k, v in obj.items()}
    return obj


def _eligible(t: torch.Tensor) -> bool:
    """What CUDA autocast casts: floating tensors other than float64."""
    return t.is_floating_point() and t.dtype != torch.float64


def call_site() -> str:
    """'file.py:12' of the innermost frame outside torch: the code that called the op; ""
    when that is lossbench's own (the adapter's copies and reshapes are not the loss's)."""
    frame = sys._getframe(1)
    while frame is not None:
        name = frame.f_code.co_filename
        if not (name.startswith((_TORCH_DIR, "<")) or name == __file__):
            return "" if name.startswith(_CHECKS_DIR) else f"{Path(name).name}:{frame.f_lineno}"
        frame = frame.f_back
    return ""


class CudaAutocastPolicy(TorchFunctionMode):
    """CUDA autocast's op policy at the Python API level, on any device, applied while CPU
    autocast is on (use :func:`emulated`, which turns it on).

    ``isolate``: every op computes in float32 except the ops at that call site
    ('name@file.py:12'), which get bf16 inputs as under the policy: the bf16 error of that
    site alone. With ``record``, the sites of ops that produced bf16 outputs are counted in
    ``sites`` (for :func:`worst_site`)."""

    def __init__(self, dtype: torch.dtype = torch.bfloat16, isolate: str | None = None,
                 record: bool = False):
        super().__init__()
        self.dtype, self.isolate, self.record = dtype, isolate, record
        self.sites: dict[str, int] = {}
        self.lists = cuda_op_lists()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        at = call_site() if (self.record or self.isolate) else ""
        site = f"{name}@{at}" if at else ""
        if self.isolate is not None:
            to = self.dtype if site == self.isolate else torch.float32
            args, kwargs = _cast((args, kwargs), lambda t: t.to(to) if _eligible(t) else t)
        elif "out" not in kwargs and torch.is_autocast_enabled("cpu"):
            # (out= ops are not autocast; code that turned autocast off is left alone)
            args, kwargs = self._policy(name, args, kwargs)
        out = func(*args, **kwargs)
        if self.record and site and any(t.dtype == self.dtype for t in _tensors(out)):
            self.sites[site] = self.sites.get(site, 0) + 1
        return out

    def _policy(self, name, args, kwargs):
        lists = self.lists
        if name in lists.lower:
            return _cast((args, kwargs), lambda t: t.to(self.dtype) if _eligible(t) else t)
        # F.softmax & co. pass dtype=None through to here: only an explicit dtype opts out
        if name in lists.fp32 and kwargs.get("dtype") is None:
            return _cast((args, kwargs), lambda t: t.float() if _eligible(t) else t)
        if name in lists.promote:
            floats = [t for t in _tensors((args, kwargs)) if _eligible(t)]
            if floats:
                widest = max((t.dtype for t in floats), key=lambda d: torch.finfo(d).bits)
                return _cast((args, kwargs), lambda t: t.to(widest) if _eligible(t) else t)
        return args, kwargs


@contextmanager
def emulated(**kwargs):
    """:class:`CudaAutocastPolicy` inside CPU autocast: the autocast flag is what code that
    turns autocast off (``with torch.autocast(device, enabled=False)``) switches, and the
    policy follows it. CPU autocast's own casts lower no op CUDA keeps (its lower-precision
    ops are on CUDA's list); its float32 list upcasts a few ops CUDA leaves alone (fft,
    linalg), where the emulation may miss a bf16 error but cannot invent one."""
    with torch.autocast("cpu", dtype=torch.bfloat16), CudaAutocastPolicy(**kwargs) as mode:
        yield mode


def bf16_autocast(device: str):
    """The autocast a bf16 training step runs the loss under on ``device``: CUDA's own
    on CUDA, its op policy emulated elsewhere (see :class:`CudaAutocastPolicy`)."""
    if device == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return emulated()


def worst_site(run, error_of, limit: int = 16) -> tuple[str, float] | None:
    """The call site whose bf16 rounding alone gives the largest error: ``run(mode)`` calls the
    loss under a policy mode and returns its output, ``error_of(output)`` measures it."""
    with emulated(record=True) as recorder:
        run()
    best = None
    for site in list(recorder.sites)[:limit]:
        try:
            with CudaAutocastPolicy(isolate=site):
                err = error_of(run())
        except Exception:  # noqa: BLE001, S112  an op that cannot run in float32 alone
            continue
        if best is None or err > best[1]:
            best = (site, err)
    return best
