"""The expressions of ``Atlas.query``: parsed with ``ast``, evaluated over catalog columns with NumPy.

The syntax is the one of ``pandas.DataFrame.query`` for what a catalog needs: column names
(backtick-quoted when they contain dots, e.g. ```temperature.max```), int / float / str /
bool literals, lists of literals, comparisons (chained too), ``in`` / ``not in``,
``and`` / ``or`` / ``not`` (and ``&`` / ``|`` / ``~``), arithmetic ``+ - * /`` on numbers,
and ``col.isna()`` / ``col.notna()``. Timestamp columns compare with ISO strings.

Missing values follow SQL: a comparison involving one is *unknown*, ``not unknown`` is
unknown, ``False and unknown`` is False, ``True or unknown`` is True, and a row whose
result is unknown does not match. So ``platform != 'BO'`` does not select datasets without
a ``platform`` attribute; ``platform.isna()`` does.
"""

from __future__ import annotations

import ast
import operator
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

from . import dtypes as D

#: column kinds: "int" (int64), "uint" (uint64), "float", "bool", "str", "time" (int64 ns), "object"
NUMERIC_KINDS = ("int", "uint", "float")


@dataclass(frozen=True)
class Column:
    """One catalog column: ``values`` (meaningless where not ``valid``) and its kind."""

    kind: str
    values: np.ndarray
    valid: np.ndarray


@dataclass(frozen=True)
class _Mask:
    """A three-valued condition: True where ``value & known``, unknown where not ``known``."""

    value: np.ndarray
    known: np.ndarray


@dataclass(frozen=True)
class _Lit:
    value: Any


_CMP: dict[type, Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt,
    ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge,
}
_ARITH: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
}
_KIND_NAMES = {"int": "integer", "uint": "integer", "float": "float", "bool": "bool", "str": "string",
               "time": "timestamp", "object": "mixed"}


def _substitute_backticks(expr: str) -> tuple[str, dict[str, str]]:
    """Replace each ```name``` outside string literals by a placeholder identifier."""
    out: list[str] = []
    names: dict[str, str] = {}
    i, n = 0, len(expr)
    while i < n:
        c = expr[i]
        if c in "'\"":  # copy a string literal whole (backslash escapes included)
            j = i + 1
            while j < n and expr[j] != c:
                j += 2 if expr[j] == "\\" else 1
            out.append(expr[i:j + 1])
            i = j + 1
        elif c == "`":
            j = expr.find("`", i + 1)
            if j < 0:
                raise ValueError(f"query {expr!r}: unclosed backtick at position {i}")
            ph = f"__col{len(names)}"
            names[ph] = expr[i + 1:j]
            out.append(f" {ph} ")
            i = j + 1
        else:
            out.append(c)
            i += 1
    return "".join(out), names


def evaluate(expr: str, columns: Mapping[str, Column], n: int) -> np.ndarray:
    """The boolean selection of ``expr`` over ``n`` rows (``ValueError`` naming what is wrong)."""
    if not isinstance(expr, str):
        raise TypeError(f"query expression must be a str, got {type(expr).__name__}: {expr!r}")
    if not expr.strip():
        raise ValueError("query expression is empty")
    src, names = _substitute_backticks(expr)
    try:
        tree = ast.parse(src.strip(), mode="eval")
    except SyntaxError as e:
        raise ValueError(f"query {expr!r} is not a valid expression: {e.msg}") from None
    ev = _Evaluator(expr, columns, names, n)
    res = ev.condition(ev.eval(tree.body), tree.body)
    return res.value & res.known


class _Evaluator:
    def __init__(self, expr: str, columns: Mapping[str, Column], names: dict[str, str], n: int) -> None:
        self.expr, self.columns, self.names, self.n = expr, columns, names, n

    def fail(self, msg: str) -> ValueError:
        return ValueError(f"query {self.expr!r}: {msg}")

    def text(self, node: ast.AST) -> str:
        s = ast.unparse(node)
        for ph, name in self.names.items():
            s = s.replace(ph, f"`{name}`")
        return s

    # ------------------------------------------------------------------ nodes
    def eval(self, node: ast.AST) -> Any:
        if isinstance(node, ast.Name):
            return self.column(self.names.get(node.id, node.id))
        if isinstance(node, ast.Constant):
            v = node.value
            if isinstance(v, (bool, int, float, str)):
                return _Lit(v)
            raise self.fail(f"unsupported literal {v!r}")
        if isinstance(node, (ast.List, ast.Tuple)):
            items = [self.eval(e) for e in node.elts]
            if not all(isinstance(x, _Lit) for x in items):
                raise self.fail(f"a list may only hold literals: {self.text(node)}")
            return _Lit(tuple(x.value for x in items))
        if isinstance(node, ast.BoolOp):
            conds = [self.condition(self.eval(v), v) for v in node.values]
            out = conds[0]
            for c in conds[1:]:
                out = _and(out, c) if isinstance(node.op, ast.And) else _or(out, c)
            return out
        if isinstance(node, ast.UnaryOp):
            return self.unary(node)
        if isinstance(node, ast.BinOp):
            return self.binop(node)
        if isinstance(node, ast.Compare):
            return self.compare(node)
        if isinstance(node, ast.Call):
            return self.call(node)
        if isinstance(node, ast.Attribute):
            raise self.fail(f"unknown column {self.text(node)!r} (put names with dots in backticks)")
        raise self.fail(f"unsupported syntax {self.text(node)!r}")

    def column(self, name: str) -> Column:
        col = self.columns.get(name)
        if col is None:
            known = ", ".join(sorted(self.columns)[:30]) + (", ..." if len(self.columns) > 30 else "")
            raise self.fail(f"unknown column {name!r}; the catalog has: {known or '(no columns)'}")
        return col

    def condition(self, v: Any, node: ast.AST) -> _Mask:
        if isinstance(v, _Mask):
            return v
        if isinstance(v, Column) and v.kind == "bool":
            return _Mask(v.values, v.valid)
        if isinstance(v, _Lit) and isinstance(v.value, bool):
            return _Mask(np.full(self.n, v.value), np.ones(self.n, bool))
        raise self.fail(f"{self.text(node)!r} is not a condition (compare it with something)")

    def unary(self, node: ast.UnaryOp) -> Any:
        if isinstance(node.op, (ast.Not, ast.Invert)):
            m = self.condition(self.eval(node.operand), node.operand)
            return _Mask(~m.value, m.known)
        v = self.eval(node.operand)
        if isinstance(node.op, (ast.USub, ast.UAdd)):
            sign = -1 if isinstance(node.op, ast.USub) else 1
            if isinstance(v, _Lit) and isinstance(v.value, (int, float)) and not isinstance(v.value, bool):
                return _Lit(sign * v.value)
            if isinstance(v, Column) and v.kind in NUMERIC_KINDS:
                vals = v.values.astype(np.float64) if v.kind == "uint" else v.values
                return Column("float" if v.kind == "uint" else v.kind, sign * vals, v.valid)
        raise self.fail(f"unsupported operand of {self.text(node)!r}")

    def binop(self, node: ast.BinOp) -> Any:
        if isinstance(node.op, (ast.BitAnd, ast.BitOr)):
            a = self.condition(self.eval(node.left), node.left)
            b = self.condition(self.eval(node.right), node.right)
            return _and(a, b) if isinstance(node.op, ast.BitAnd) else _or(a, b)
        fn = _ARITH.get(type(node.op))
        if fn is None:
            raise self.fail(f"unsupported operator in {self.text(node)!r}")
        a, b = self.eval(node.left), self.eval(node.right)
        for x in (a, b):
            ok = (isinstance(x, Column) and x.kind in NUMERIC_KINDS) or (
                isinstance(x, _Lit) and isinstance(x.value, (int, float)) and not isinstance(x.value, bool))
            if not ok:
                raise self.fail(f"arithmetic needs numbers: {self.text(node)!r}")
        if isinstance(a, _Lit) and isinstance(b, _Lit):
            try:
                return _Lit(fn(a.value, b.value))
            except ArithmeticError as e:
                raise self.fail(f"{self.text(node)!r}: {e}") from None
        av, bv = (_num(x) for x in (a, b))
        with np.errstate(all="ignore"):
            out = np.asarray(fn(av, bv), dtype=np.float64)
        valid = np.ones(self.n, bool)
        for x in (a, b):
            if isinstance(x, Column):
                valid = valid & x.valid
        return Column("float", out, valid & ~np.isnan(out))

    def call(self, node: ast.Call) -> _Mask:
        f = node.func
        if (isinstance(f, ast.Attribute) and f.attr in ("isna", "notna", "isnull", "notnull")
                and not node.args and not node.keywords):
            v = self.eval(f.value)
            if isinstance(v, Column):
                na = ~v.valid
                return _Mask(na if f.attr in ("isna", "isnull") else ~na, np.ones(self.n, bool))
        raise self.fail(f"unsupported call {self.text(node)!r} (only col.isna() and col.notna())")

    def compare(self, node: ast.Compare) -> _Mask:
        left = self.eval(node.left)
        out: _Mask | None = None
        lnode: ast.AST = node.left
        for op, rnode in zip(node.ops, node.comparators):
            right = self.eval(rnode)
            m = self.compare_one(op, left, right, lnode, rnode)
            out = m if out is None else _and(out, m)
            left, lnode = right, rnode
        assert out is not None
        return out

    def compare_one(self, op: ast.cmpop, a: Any, b: Any, an: ast.AST, bn: ast.AST) -> _Mask:
        if isinstance(op, (ast.In, ast.NotIn)):
            if not isinstance(b, _Lit) or not isinstance(b.value, tuple):
                raise self.fail(f"'in' needs a list of literals on its right: {self.text(bn)!r}")
            m = _Mask(np.zeros(self.n, bool), np.ones(self.n, bool))
            for item in b.value:
                m = _or(m, self.compare_one(ast.Eq(), a, _Lit(item), an, bn))
            return _Mask(~m.value, m.known) if isinstance(op, ast.NotIn) else m
        fn = _CMP.get(type(op))
        if fn is None:
            raise self.fail(f"unsupported comparison {type(op).__name__} in {self.text(an)!r}")
        if isinstance(a, _Mask) or isinstance(b, _Mask):
            raise self.fail(f"cannot compare a condition: put parentheses around {self.text(an)!r}")
        if isinstance(a, _Lit) and isinstance(b, _Lit):
            try:
                r = bool(fn(a.value, b.value))
            except TypeError:
                raise self.fail(f"cannot compare {a.value!r} with {b.value!r}") from None
            return _Mask(np.full(self.n, r), np.ones(self.n, bool))
        if isinstance(a, _Lit):  # literal OP column -> column (reflected OP) literal
            return self.compare_one(_REFLECT[type(op)](), b, a, bn, an)
        col: Column = a
        if col.kind == "object":
            return self.compare_objects(fn, col, b)
        if isinstance(b, Column):
            ka, kb = _family(col.kind), _family(b.kind)
            if ka != kb:
                raise self.fail(f"cannot compare {self.text(an)} ({_KIND_NAMES[col.kind]}) with "
                                f"{self.text(bn)} ({_KIND_NAMES[b.kind]})")
            if b.kind == "object":
                raise self.fail(f"cannot compare two columns of mixed kinds: {self.text(bn)}")
            with np.errstate(all="ignore"):
                return _Mask(np.asarray(fn(col.values, b.values), bool), col.valid & b.valid)
        lit = self.literal_for(col, b.value, an, bn)
        with np.errstate(all="ignore"):
            return _Mask(np.asarray(fn(col.values, lit), bool), col.valid)

    def literal_for(self, col: Column, v: Any, an: ast.AST, bn: ast.AST) -> Any:
        """The literal ``v`` in the form of ``col``'s values (``ValueError`` if it cannot be)."""
        kind = col.kind
        if kind == "time":
            if isinstance(v, str):
                try:
                    return D.to_ns(np.datetime64(v, "ns"), f"timestamp {v!r}")
                except (ValueError, TypeError, OverflowError) as e:
                    raise self.fail(f"{self.text(bn)} is not an ISO timestamp ({e})") from None
        elif kind == "str":
            if isinstance(v, str):
                return v
        elif kind == "bool":
            if isinstance(v, bool):
                return v
        elif kind in NUMERIC_KINDS:
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                return v
        hint = " (compare timestamps with ISO strings, e.g. '2020-01-31')" if kind == "time" else ""
        raise self.fail(f"cannot compare {self.text(an)} ({_KIND_NAMES[kind]}) with {self.text(bn)}{hint}")

    def compare_objects(self, fn: Callable[[Any, Any], Any], col: Column, b: Any) -> _Mask:
        """Mixed-kind columns: element by element; values of another type than the literal are unknown."""
        if isinstance(b, Column):
            raise self.fail("cannot compare a column of mixed kinds with another column")
        lit = b.value
        value = np.zeros(self.n, bool)
        known = np.zeros(self.n, bool)
        for i in np.flatnonzero(col.valid):
            x = col.values[i]
            if isinstance(x, tuple) and isinstance(lit, tuple):
                value[i], known[i] = bool(fn(x, lit)), True
            elif _same_family(x, lit):
                value[i], known[i] = bool(fn(x, lit)), True
        return _Mask(value, known)


_REFLECT: dict[type, type] = {ast.Eq: ast.Eq, ast.NotEq: ast.NotEq, ast.Lt: ast.Gt, ast.LtE: ast.GtE,
                              ast.Gt: ast.Lt, ast.GtE: ast.LtE}


def _family(kind: str) -> str:
    return "num" if kind in NUMERIC_KINDS else kind


def _same_family(x: Any, lit: Any) -> bool:
    if isinstance(x, bool) or isinstance(lit, bool):
        return isinstance(x, bool) and isinstance(lit, bool)
    if isinstance(x, (int, float)):
        return isinstance(lit, (int, float))
    return type(x) is type(lit)


def _num(x: Any) -> Any:
    if isinstance(x, _Lit):
        return x.value
    return x.values.astype(np.float64)


def _and(a: _Mask, b: _Mask) -> _Mask:
    # False wins over unknown
    false_a, false_b = a.known & ~a.value, b.known & ~b.value
    known = (a.known & b.known) | false_a | false_b
    return _Mask(a.value & b.value & known, known)


def _or(a: _Mask, b: _Mask) -> _Mask:
    # True wins over unknown
    true_a, true_b = a.known & a.value, b.known & b.value
    known = (a.known & b.known) | true_a | true_b
    return _Mask(true_a | true_b, known)
