"""In-memory selection on tensors.

extension (loads facenms._C), ops (typed wrappers of its kernels), inputs
(checks and conversions), csr (grouping by identity), ranking, runner (NMS
passes), search (threshold, ratio and per-identity decisions), select (the
driver), reference (the slow, obviously correct rule).
"""
