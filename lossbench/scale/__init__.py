"""Scale ladders: the same comparison at several model sizes (``ladder``: the [scale]
section, shape and budget rules) and what the report states about them (``fits``: the
saturating power law, rank agreement between sizes, crossovers). Both are pure."""

from lossbench.scale.ladder import ScaleSpec, Size, at_size, parse_scale

__all__ = ["ScaleSpec", "Size", "at_size", "parse_scale"]
