"""Small three-level problems with an independent answer for the hypergradient, shared by the
tests and ``python -m bench exactness``: a quadratic with closed forms (quadratic.py) and a
tanh network differentiated by autograd through its unrolled optimizer steps (unrolled.py)."""
