"""Primitive differentiable ops, one ``Function`` subclass each, grouped by kind.

elementwise.py  arithmetic and pointwise maths (broadcasting; the tape un-broadcasts)
reduce.py       sum, mean, max/min, logsumexp, softmax, log_softmax
shape.py        reshape, permute, broadcast_to, indexing, concat/stack/split, pad, tril, diagonal
linalg.py       matmul
loss.py         binary cross-entropy with logits
device.py       device moves and dtype casts
recompute.py    a function run again in backward instead of keeping its graph
"""
