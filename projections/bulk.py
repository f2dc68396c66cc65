"""Rebuilds at bulk speed, from the projections' own handlers.

A rebuild replays the whole log into fresh tables, so it may work differently from the
live projector as long as the tables come out the same. `BulkProjector` does three things
the live one does not, none of them specific to a projection:

- Tables start UNLOGGED and without their secondary indexes (every plain `CREATE INDEX`
  of a projection's DDL is held back; unique indexes and constraints stay, since
  statements may rely on them). `finish()` makes them logged, then builds the indexes.
- Pages are large, and events are decoded straight from their JSON (`projections.decode`).
- The handlers' statements for a page of a projection that only inserts (history,
  and any page of the others that holds only inserts and additive upserts, which
  commute) run set-based: their parameters are copied in with COPY to a temporary table
  and each statement text runs once over them (`INSERT ... SELECT ... FROM params`,
  upserts summed per key). Any other page's statements run as written, in order,
  pipelined, as the live projector runs them.
- `waves=True` goes further for every page: `Batcher` reads each statement's shape
  from its SQL (which table it writes, and for an UPDATE or DELETE the row it targets:
  `WHERE key = %s`, or `WHERE key = (an expression)` that it resolves in SQL first), and
  puts each statement in the earliest *wave* after every earlier statement it could
  interfere with: one on the same row, one whose effect it reads, or any statement whose
  shape it cannot read. Statements of one wave commute, so each wave's statements of one
  text run as one set-based statement (`UPDATE ... FROM params`, `DELETE ... USING
  params` too). A statement whose shape is not understood runs as written, alone in its
  wave. On the 2-core development machine this costs more in Python than it saves the
  server (7.9k events/s against 11.4k for the default on 695k events), so it is off.

So the handlers stay the one definition of what a projection holds; new tables and
statements flow through without a line here, and at worst run as slowly as before.
`tests/test_bulk_rebuild.py` checks a bulk rebuild against the event-by-event projector.
"""

from __future__ import annotations

import itertools
import re
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import psycopg
from eventsourcing.persistence import Notification
from psycopg import sql
from psycopg._queries import PostgresQuery

from ledger.application import Ledger
from ledger.database import Database
from ledger.log import LoggedEvent
from ledger.store import log_page
from projections import positions
from projections.base import Projection, Statement
from projections.decode import Decoder
from projections.runner import Projector

BULK_PAGE = 20_000  # events a rebuild applies per transaction
MIN_BATCH = 3  # a wave's statements of one text below this run as written

_INDEX = re.compile(r"^\s*CREATE\s+INDEX\b", re.I)
_TABLE = re.compile(r"^(\s*CREATE\s+)(TABLE\b)", re.I)


def split_ddl(ddl: Iterable[str]) -> tuple[list[str], list[str]]:
    """(what creates the tables, unique indexes included; the plain indexes)."""
    tables: list[str] = []
    indexes: list[str] = []
    for statement in ddl:
        (indexes if _INDEX.match(statement) else tables).append(statement)
    return tables, indexes


def unlogged(statement: str) -> str:
    return _TABLE.sub(r"\1UNLOGGED \2", statement, count=1)


# ----- reading a statement's shape ------------------------------------------------------


def _top_level(text: str) -> Iterator[tuple[int, str]]:
    """(index, character) of `text` outside parentheses and quotes."""
    depth, quote = 0, ""
    for i, ch in enumerate(text):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif depth == 0:
            yield i, ch


def _find_top(text: str, word: str) -> list[int]:
    """Where the keyword `word` starts in `text`, outside parentheses and quotes."""
    top = {i for i, _ in _top_level(text)}
    pattern = re.compile(rf"\b(?:{word})\b", re.I)
    return [m.start() for m in pattern.finditer(text) if m.start() in top]


def _split_top(text: str) -> list[str]:
    cuts = [i for i, ch in _top_level(text) if ch == ","]
    bounds = [-1, *cuts, len(text)]
    return [text[a + 1 : b].strip() for a, b in itertools.pairwise(bounds)]


def _wrapped(text: str) -> bool:
    """Whether `text` is one parenthesised expression."""
    text = text.strip()
    if not (text.startswith("(") and text.endswith(")")):
        return False
    depth = 0
    for i, ch in enumerate(text):
        depth += ch == "("
        depth -= ch == ")"
        if depth == 0 and i < len(text) - 1:
            return False
    return True


_PARAM = re.compile(r"%s")


def _rewrite(text: str, first: int = 0) -> str:
    """`text` with its n-th `%s` (from `first`) made the column `p._p<n>`."""
    counter = itertools.count(first)
    return _PARAM.sub(lambda _: f"p._p{next(counter)}", text)


@dataclass(frozen=True)
class Shape:
    # insert | upsert (additive) | update | delete | table (writes `table`, else unknown)
    # | other (writes who knows what)
    kind: str
    table: str = ""
    nparams: int = 0
    sql: str = ""  # the set-based statement over p (the parameters), `%s` the wave's rows
    key_col: str = ""  # update/delete: the column that picks the row
    key_param: int = -1  # ... the parameter that gives it, or
    key_expr: str = ""  # ... an expression over p that does (resolved in SQL first)
    known: tuple[tuple[str, int], ...] = ()  # insert: columns given by a parameter
    read_key: tuple[str, str, int] | None = None  # reads one row: (table, column, parameter)
    reads: frozenset[str] = frozenset()  # the projection's tables it reads otherwise

    @property
    def batchable(self) -> bool:
        return self.kind not in ("table", "other")


OTHER = Shape("other")
_NAME = re.compile(r"^\w+$")
_UPSERT = re.compile(
    r"\s*AS\s+(\w+)\s*(\([^()]*\)\s*SELECT\b.*?)\s+ON\s+CONFLICT\s*\(([^()]*)\)\s*"
    r"DO\s+UPDATE\s+SET\s+(.*)$",
    re.S | re.I,
)


def shape_of(text: str, tables: Sequence[str]) -> Shape:
    """What a handler's statement writes and reads, and its set-based form: `table` or
    `OTHER` whenever anything about it is not plain."""
    if "%%" in text or "%(" in text or ";" in text or re.search(r"\$\d", text):
        return OTHER
    head = re.match(r"\s*(INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+(\w+)\b", text, re.I)
    if not head:
        return OTHER
    table = head.group(2)
    rest = text[head.end() :]
    mentioned = frozenset(t for t in tables if t != table and re.search(rf"\b{t}\b", rest))
    fallback = Shape("table", table, reads=mentioned)
    if re.search(r"\b(RETURNING|nextval|random|clock_timestamp)\b", text, re.I):
        return fallback
    if re.search(rf"\b{re.escape(table)}\b", rest):
        return fallback  # it reads its own table
    verb = head.group(1).split()[0].upper()
    if verb == "INSERT":
        upsert = _UPSERT.match(rest)
        made = _upsert(table, upsert) if upsert else None
        if made is None and not re.search(r"\bCONFLICT\b", rest, re.I):
            made = _insert(table, rest)
    else:
        made = {"UPDATE": _update, "DELETE": _delete}[verb](table, rest)
    made = made or fallback
    if made.key_expr and any(re.search(rf"\b{t}\b", made.key_expr) for t in tables):
        made = fallback  # its row is known only once the statements before it have run
    read_key = made.read_key
    if read_key is None:
        read_key = next(filter(None, (_keyed_read(text, r) for r in sorted(mentioned))), None)
    reads = mentioned - {read_key[0]} if read_key else mentioned
    if read_key and len(re.findall(rf"\b{read_key[0]}\b", rest)) > 1:
        read_key, reads = None, mentioned  # the keyed table is read elsewhere too
    if read_key and made.read_key is None and made.kind != "table":
        read_key, reads = None, mentioned  # the batched form would not know it
    return Shape(
        **{**made.__dict__, "nparams": text.count("%s"), "reads": reads, "read_key": read_key}
    )


def _keyed_read(text: str, table: str) -> tuple[str, str, int] | None:
    """(table, column, parameter) when `table` is read once, as `FROM table ... WHERE
    column = %s [AND ...]` within one (sub)query."""
    found = list(re.finditer(rf"\bFROM\s+{table}\b", text, re.I))
    if len(found) != 1:
        return None
    at = found[0].start()
    start, depth = 0, 0
    for i in range(at - 1, -1, -1):  # the parenthesis that opens this (sub)query
        depth += (text[i] == ")") - (text[i] == "(")
        if depth < 0:
            start = i + 1
            break
    end, depth = len(text), 0
    for i in range(at, len(text)):
        depth += (text[i] == "(") - (text[i] == ")")
        if depth < 0:
            end = i
            break
    scope = text[start:end]
    where = _find_top(scope, "WHERE")
    if len(where) != 1 or where[0] < at - start or _find_top(scope, "OR"):
        return None
    condition = scope[where[0] + 5 :]
    key = re.match(r"\s*(\w+)\s*=\s*%s\s*(AND\b|$)", condition, re.S | re.I)
    if key is None or _find_top(scope[where[0] :], "GROUP|ORDER|LIMIT|UNION|HAVING"):
        return None
    before = text[: start + where[0] + 5 + key.start()].count("%s") + 0
    return table, key.group(1), before


def _select(rest: str) -> tuple[list[str], list[str], str, tuple[str, str, int] | None] | None:
    """(columns, select items, the set-based SELECT over p, the row read by key) of
    `(columns) VALUES (...)` or `(columns) SELECT ... [FROM ... [WHERE ...]]`."""
    m = re.match(r"\s*\(([^()]*)\)\s*(.*)$", rest, re.S)
    if not m:
        return None
    columns = [c.strip() for c in m.group(1).split(",")]
    body = m.group(2).strip()
    values = re.match(r"VALUES\s*(\(.*\))\s*$", body, re.S | re.I)
    if values and _wrapped(values.group(1)):
        items, from_where = _split_top(values.group(1).strip()[1:-1]), ""
    elif re.match(r"SELECT\b", body, re.I):
        select = body[6:]
        if any(_find_top(select, w) for w in ("GROUP", "ORDER", "LIMIT", "UNION", "HAVING")):
            return None
        cut = _find_top(select, "FROM")
        if len(cut) > 1 or _find_top(select, "DISTINCT"):
            return None
        items = _split_top(select[: cut[0]] if cut else select)
        from_where = select[cut[0] :] if cut else ""
    else:
        return None
    if len(items) != len(columns) or not all(_NAME.match(c) for c in columns):
        return None
    before = sum(item.count("%s") for item in items)
    read_key = None
    tail = " WHERE p._n = ANY(%s::bigint[])"
    if from_where:
        where = _find_top(from_where, "WHERE")
        if len(where) > 1:
            return None
        tables_part = from_where[4 : where[0]] if where else from_where[4:]
        tail = f" CROSS JOIN {_rewrite(tables_part, before)}"
        if where:
            first = before + tables_part.count("%s")
            condition = from_where[where[0] + 5 :]
            tail += f" WHERE ({_rewrite(condition, first)}) AND p._n = ANY(%s::bigint[])"
            single = re.match(r"^\s*(\w+)\s*$", tables_part)
            key = re.match(r"\s*(\w+)\s*=\s*%s\s*(AND\b|$)", condition, re.S | re.I)
            if single and key and not _find_top(condition, "OR"):
                read_key = (single.group(1), key.group(1), first)
        else:
            tail += " WHERE p._n = ANY(%s::bigint[])"
    query = f"SELECT {_rewrite(', '.join(items))} FROM {{params}} p{tail}"
    return columns, items, query, read_key


def _insert(table: str, rest: str) -> Shape | None:
    found = _select(rest)
    if found is None:
        return None
    columns, items, query, read_key = found
    known, before = [], 0
    for column, item in zip(columns, items, strict=True):
        if item == "%s":
            known.append((column, before))
        before += item.count("%s")
    statement = f"INSERT INTO {table} ({', '.join(columns)}) {query}"
    return Shape("insert", table, sql=statement, known=tuple(known), read_key=read_key)


def _upsert(table: str, m: re.Match[str]) -> Shape | None:
    """`INSERT ... ON CONFLICT (keys) DO UPDATE SET n = alias.n + EXCLUDED.n, ...`: adding
    commutes, so a wave's rows are summed per key and upserted once."""
    alias, body, keys_text, sets = m.groups()
    found = _select(body)
    if found is None:
        return None
    columns, _, query, read_key = found
    keys = [k.strip() for k in keys_text.split(",")]
    added = []
    for item in _split_top(sets):
        one = re.match(rf"(\w+)\s*=\s*{alias}\.(\w+)\s*\+\s*EXCLUDED\.(\w+)$", item, re.I)
        if not one or len({one.group(1), one.group(2), one.group(3)}) != 1:
            return None
        added.append(one.group(1))
    if sorted(keys + added) != sorted(columns):
        return None
    outer = ", ".join(c if c in keys else f"sum({c})" for c in columns)
    statement = (
        f"INSERT INTO {table} AS {alias} ({', '.join(columns)}) SELECT {outer}"
        f" FROM ({query}) s({', '.join(columns)}) GROUP BY {', '.join(keys)}"
        f" ON CONFLICT ({keys_text}) DO UPDATE SET {sets}"
    )
    return Shape("upsert", table, sql=statement, read_key=read_key)


def _key(condition: str, first: int) -> tuple[str, int, str] | None:
    """(column, parameter or -1, expression or '') of `column = %s` or `column = (...)`."""
    m = re.match(r"\s*(\w+)\s*=\s*(.*?)\s*$", condition, re.S)
    if not m:
        return None
    column, value = m.group(1), m.group(2)
    if value == "%s":
        return column, first, ""
    if _wrapped(value):
        return column, -1, _rewrite(value, first)
    return None


def _update(table: str, rest: str) -> Shape | None:
    m = re.match(r"\s*SET\b(.*)$", rest, re.S | re.I)
    if not m:
        return None
    body = m.group(1)
    where = _find_top(body, "WHERE")
    if len(where) != 1 or _find_top(body, "FROM"):
        return None
    sets, condition = body[: where[0]], body[where[0] + 5 :]
    key = _key(condition, sets.count("%s"))
    if key is None or re.search(rf"\b{key[0]}\b", sets):
        return None
    return _keyed("update", table, f"UPDATE {table} SET {_rewrite(sets)} FROM {{params}} p", key)


def _delete(table: str, rest: str) -> Shape | None:
    m = re.match(r"\s*WHERE\b(.*)$", rest, re.S | re.I)
    key = _key(m.group(1), 0) if m else None
    if key is None:
        return None
    return _keyed("delete", table, f"DELETE FROM {table} USING {{params}} p", key)


def _keyed(kind: str, table: str, head: str, key: tuple[str, int, str]) -> Shape:
    """An UPDATE or DELETE over the parameters table `p`, each row matched by its key."""
    column, param, expr = key
    match = f"p._p{param}" if param >= 0 else "p._key"
    statement = f"{head} WHERE p._n = ANY(%s::bigint[]) AND {table}.{column} = {match}"
    return Shape(kind, table, sql=statement, key_col=column, key_param=param, key_expr=expr)


# ----- scheduling -------------------------------------------------------------------------


def _bump(d: dict[Any, int], k: Any, wave: int) -> None:
    if d.get(k, 0) < wave:
        d[k] = wave


@dataclass
class Waves:
    """Assigns each statement the earliest wave after every earlier one it may interfere
    with: one that writes a row it writes or reads (rows are known by a key column's
    value; keys on different columns, or an insert that does not give the key, may meet),
    one that reads a row it writes, any other write to or read of a table it writes or
    reads as a whole, and any statement whose shape is not understood. Additive upserts
    commute with each other."""

    last: int = 0
    barrier: int = 0  # the last statement not understood
    keyed_w: dict[tuple[str, str, Any], int] = field(default_factory=dict)
    keyed_r: dict[tuple[str, str, Any], int] = field(default_factory=dict)
    col_w: dict[tuple[str, str], int] = field(default_factory=dict)
    col_r: dict[tuple[str, str], int] = field(default_factory=dict)
    inserts: dict[tuple[str, frozenset[str]], int] = field(default_factory=dict)
    whole_w: dict[str, int] = field(default_factory=dict)  # table-level writes
    whole_r: dict[str, int] = field(default_factory=dict)  # table-level reads
    upserts: dict[str, int] = field(default_factory=dict)
    plain_w: dict[str, int] = field(default_factory=dict)  # any write but an upsert
    any_w: dict[str, int] = field(default_factory=dict)
    any_r: dict[str, int] = field(default_factory=dict)

    def place(self, s: Shape, key: Any, known: dict[str, Any], read: Any) -> int:
        if s.kind == "other":
            self.last = self.barrier = self.last + 1
            return self.last
        t = s.table
        base = self.barrier
        for r in s.reads:
            base = max(base, self.any_w.get(r, 0))
        if s.read_key is not None:
            rt = s.read_key[0]
            base = max(base, self.whole_w.get(rt, 0), self.upserts.get(rt, 0))
            base = max(base, self._row(rt, s.read_key[1], read, self.keyed_w, self.col_w))
        if s.kind == "table":
            base = max(base, self.any_w.get(t, 0), self.any_r.get(t, 0))
        elif s.kind == "upsert":
            base = max(base, self.plain_w.get(t, 0), self.any_r.get(t, 0))
        else:
            base = max(base, self.whole_w.get(t, 0), self.whole_r.get(t, 0), self.upserts.get(t, 0))
            if s.kind == "insert":
                for (table, c), w in itertools.chain(self.col_w.items(), self.col_r.items()):
                    if table == t:
                        base = max(base, self._known(t, c, known, w))
            else:
                c = s.key_col
                base = max(base, self._row(t, c, key, self.keyed_w, self.col_w))
                base = max(base, self._row(t, c, key, self.keyed_r, self.col_r))
        wave = base + 1
        self._record(s, wave, key, known, read)
        return wave

    def _known(self, t: str, c: str, known: dict[str, Any], w: int) -> int:
        if c not in known:
            return w
        return max(self.keyed_w.get((t, c, known[c]), 0), self.keyed_r.get((t, c, known[c]), 0))

    def _row(
        self,
        t: str,
        c: str,
        key: Any,
        keyed: dict[tuple[str, str, Any], int],
        col: dict[tuple[str, str], int],
    ) -> int:
        """The last wave that touched the row `c = key` of `t` in `keyed`'s way."""
        base = keyed.get((t, c, key), 0)
        for (table, other), w in col.items():
            if table == t and other != c:
                base = max(base, w)
        for (table, cols), w in self.inserts.items():
            if table == t and c not in cols:
                base = max(base, w)
        return base

    def _record(self, s: Shape, wave: int, key: Any, known: dict[str, Any], read: Any) -> None:
        t = s.table
        self.last = max(self.last, wave)
        _bump(self.any_w, t, wave)
        if s.kind != "upsert":
            _bump(self.plain_w, t, wave)
        for r in s.reads:
            _bump(self.whole_r, r, wave)
            _bump(self.any_r, r, wave)
        if s.read_key is not None:
            rt, rc = s.read_key[0], s.read_key[1]
            _bump(self.keyed_r, (rt, rc, read), wave)
            _bump(self.col_r, (rt, rc), wave)
            _bump(self.any_r, rt, wave)
        if s.kind == "table":
            _bump(self.whole_w, t, wave)
        elif s.kind == "upsert":
            _bump(self.upserts, t, wave)
        elif s.kind == "insert":
            for column, value in known.items():
                _bump(self.keyed_w, (t, column, value), wave)
            _bump(self.inserts, (t, frozenset(known)), wave)
        else:
            _bump(self.keyed_w, (t, s.key_col, key), wave)
            _bump(self.col_w, (t, s.key_col), wave)


# ----- running a page's statements -------------------------------------------------------


@dataclass
class _Params:
    """The temporary table holding one statement text's parameters."""

    name: str
    types: list[str]
    key_type: str


_CANONICAL = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _normal(value: Any, type_name: str) -> Any:
    """A key as SQL compares it: a uuid whatever Python type carried it."""
    if value is None:
        return None
    if isinstance(value, UUID):
        return str(value)
    if type_name == "uuid":
        text = str(value)
        return text if _CANONICAL.fullmatch(text) else str(UUID(text))
    if isinstance(value, list):
        return tuple(value)
    return value


class Batcher:
    """Runs one projection's statements for a page: set-based when they all commute (or,
    with `waves`, as waves of set-based statements), else as written."""

    def __init__(
        self,
        conn: psycopg.Connection[Any],
        side: Callable[[], psycopg.Connection[Any]],
        waves: bool = False,
    ) -> None:
        self.conn = conn
        self.waves = waves
        self.side = side  # a connection for describing statements, outside the page's transaction
        self.shapes: dict[str, Shape] = {}
        self.params: dict[tuple[str, tuple[int, ...]], _Params | None] = {}
        self.columns: dict[str, dict[str, str]] = {}
        self.counter = itertools.count(1)
        self.counts: dict[str, int] = {"set_based": 0, "as_written": 0}

    def shape(self, text: str, tables: Sequence[str]) -> Shape:
        found = self.shapes.get(text)
        if found is None:
            found = shape_of(text, tables)
            if found.batchable and not self._columns(found.table):
                found = Shape("table", found.table, reads=found.reads)
            self.shapes[text] = found
        return found

    def _columns(self, table: str) -> dict[str, str]:
        if table not in self.columns:
            rows = self.conn.execute(
                "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute"
                " WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped",
                (table,),
            ).fetchall()
            self.columns[table] = {str(a): str(t) for a, t in rows}
        return self.columns[table]

    def run(self, projection: Projection, statements: Sequence[Statement]) -> None:
        if not statements:
            return
        tables = projection.tables
        shapes = [self.shape(text, tables) for text, _ in statements]
        if not self.waves and not _single_wave(shapes):
            self._as_written(statements)
            return
        numbers = [next(self.counter) for _ in statements]
        by_text: dict[str, list[int]] = defaultdict(list)
        for i, (text, _) in enumerate(statements):
            if shapes[i].batchable:
                by_text[text].append(i)
        tables_of: dict[str, _Params] = {}
        keys: dict[int, Any] = {}
        for text, members in by_text.items():
            s = shapes[members[0]]
            if len(members) >= MIN_BATCH or s.key_expr:
                made = self._load(
                    text, s, [statements[i][1] for i in members], [numbers[i] for i in members]
                )
                if made is None:
                    for i in members:
                        shapes[i] = OTHER
                    continue
                tables_of[text] = made
                if s.key_expr:
                    keys.update(self._resolve(s, made, members, numbers))
        waves = self._schedule(statements, shapes, keys)
        self._execute(statements, shapes, numbers, waves, tables_of)

    def _schedule(
        self, statements: Sequence[Statement], shapes: Sequence[Shape], keys: dict[int, Any]
    ) -> list[int]:
        if _single_wave(shapes):
            return [1] * len(statements)
        # Only what some statement of the page picks rows by needs a key.
        picked: dict[str, set[str]] = defaultdict(set)
        for s in set(shapes):
            if s.kind in ("update", "delete"):
                picked[s.table].add(s.key_col)
            if s.read_key is not None:
                picked[s.read_key[0]].add(s.read_key[1])
        plan = Waves()
        out = []
        for i, (_, params) in enumerate(statements):
            s = shapes[i]
            key: Any = None
            known: dict[str, Any] = {}
            read: Any = None
            if s.kind in ("update", "delete"):
                if s.key_expr and i not in keys:
                    s = OTHER
                else:
                    raw = keys[i] if s.key_expr else params[s.key_param]
                    key = _normal(raw, self.columns[s.table].get(s.key_col, ""))
            elif s.kind == "insert":
                wanted = picked.get(s.table)
                if wanted:
                    types = self.columns[s.table]
                    known = {
                        c: _normal(params[j], types.get(c, "")) for c, j in s.known if c in wanted
                    }
            if s.read_key is not None:
                rt, rc, j = s.read_key
                read = _normal(params[j], self._columns(rt).get(rc, ""))
            out.append(plan.place(s, key, known, read))
        return out

    def _as_written(self, statements: Sequence[Statement]) -> None:
        """As the live projector does: in order, runs of one text as one executemany."""
        with self.conn.pipeline(), self.conn.cursor() as cur:
            for text, group in itertools.groupby(statements, key=lambda st: st[0]):
                params = [p for _, p in group]
                cur.executemany(text, params)
                self.counts["as_written"] += len(params)

    def _execute(
        self,
        statements: Sequence[Statement],
        shapes: Sequence[Shape],
        numbers: Sequence[int],
        waves: Sequence[int],
        tables_of: dict[str, _Params],
    ) -> None:
        groups: dict[tuple[int, str], list[int]] = defaultdict(list)
        for i, (text, _) in enumerate(statements):
            groups[(waves[i], text)].append(i)
        with self.conn.pipeline(), self.conn.cursor() as cur:
            for (_, text), members in sorted(groups.items(), key=lambda g: (g[0][0], min(g[1]))):
                made = tables_of.get(text)
                if made is not None and shapes[members[0]].batchable and len(members) >= MIN_BATCH:
                    query = shapes[members[0]].sql.replace("{params}", made.name)
                    # Not prepared: a generic plan would not see how few rows a wave has.
                    cur.execute(query, ([numbers[i] for i in members],), prepare=False)
                    self.counts["set_based"] += len(members)
                else:
                    cur.executemany(text, [statements[i][1] for i in members])
                    self.counts["as_written"] += len(members)

    # ----- the parameters' tables ------------------------------------------------------

    def _load(
        self, text: str, s: Shape, rows: list[tuple[Any, ...]], numbers: list[int]
    ) -> _Params | None:
        made = self._table(text, s, rows)
        if made is None:
            return None
        with self.conn.cursor() as cur:
            cur.execute(
                sql.SQL(
                    "CREATE TEMP TABLE IF NOT EXISTS {} (_n bigint PRIMARY KEY, _key {}, {})"
                    " ON COMMIT DELETE ROWS"
                ).format(
                    sql.Identifier(made.name),
                    sql.SQL(made.key_type),
                    sql.SQL(", ").join(sql.SQL(f"_p{i} {t}") for i, t in enumerate(made.types)),
                )
            )
            columns = ", ".join(["_n", *(f"_p{i}" for i in range(s.nparams))])
            with cur.copy(f"COPY {made.name} ({columns}) FROM STDIN") as copy:
                for n, row in zip(numbers, rows, strict=True):
                    copy.write_row((n, *row))
        return made

    def _table(self, text: str, s: Shape, rows: list[tuple[Any, ...]]) -> _Params | None:
        sample = tuple(_sample([r[j] for r in rows]) for j in range(s.nparams))
        query = PostgresQuery(psycopg.adapt.Transformer(self.conn))
        query.convert(text, sample)
        oids = tuple(20 if o in (21, 23) else o for o in query.types)
        cache = (text, oids)
        if cache not in self.params:
            self.params[cache] = self._describe(query.query, oids, s)
        return self.params[cache]

    def _describe(self, query: bytes, oids: tuple[int, ...], s: Shape) -> _Params | None:
        name = f"ledger_bulk_{len(self.params)}"
        side = self.side()
        statement = f"ledger_bulk_describe_{len(self.params)}".encode()
        try:
            result = side.pgconn.prepare(statement, query, oids)
            if result.status != psycopg.pq.ExecStatus.COMMAND_OK:
                return None
            described = side.pgconn.describe_prepared(statement)
            types = [described.param_type(i) for i in range(described.nparams)]
            side.execute(sql.SQL("DEALLOCATE {}").format(sql.Identifier(statement.decode())))
            names = side.execute(
                "SELECT format_type(t, NULL) FROM unnest(%s::oid[]) WITH ORDINALITY u(t, i)"
                " ORDER BY i",
                (types,),
            ).fetchall()
        except psycopg.Error:
            return None
        key_type = self.columns[s.table].get(s.key_col, "text") if s.key_col else "text"
        return _Params(name, [str(n) for (n,) in names], key_type)

    def _resolve(
        self, s: Shape, made: _Params, members: list[int], numbers: list[int]
    ) -> dict[int, Any]:
        """The row each statement of an expression-keyed text targets, computed in SQL
        before any of them runs (the expression reads only tables of other projections,
        which this page has already brought up to date)."""
        index = {numbers[i]: i for i in members}
        rows = self.conn.execute(
            f"UPDATE {made.name} p SET _key = {s.key_expr} WHERE p._n = ANY(%s::bigint[])"
            " RETURNING p._n, p._key",
            (list(index),),
        ).fetchall()
        return {index[n]: key for n, key in rows}


def _single_wave(shapes: Sequence[Shape]) -> bool:
    """Whether every statement commutes with every other: inserts and additive upserts
    that read no row another of them writes (a page of an insert-only projection)."""
    if not {s.kind for s in shapes} <= {"insert", "upsert"}:
        return False
    upserted = {s.table for s in shapes if s.kind == "upsert"}
    inserted = {s.table for s in shapes if s.kind == "insert"}
    read = {s.read_key[0] for s in shapes if s.read_key} | {t for s in shapes for t in s.reads}
    return not upserted & inserted and not read & (upserted | inserted)


def _sample(values: list[Any]) -> Any:
    """A value of the column that shows its type best: not None, not an empty list."""
    fallback = None
    for v in values:
        if v is None:
            continue
        if isinstance(v, list) and not v:
            fallback = v
            continue
        return v
    return fallback


# ----- the projector -----------------------------------------------------------------------


class BulkProjector(Projector):
    """A projector for a scratch schema that starts empty: see the module's docstring.

    After `finish()` it is an ordinary projector again (logged tables, every index), for
    the last events a rebuild applies while the live positions are held."""

    def __init__(
        self,
        ledger: Ledger,
        database: Database,
        schema: str,
        projections: Sequence[Projection],
        page_size: int = BULK_PAGE,
        waves: bool = False,
    ) -> None:
        super().__init__(ledger, database, schema, projections, page_size)
        self.decoder = Decoder(ledger.mapper)
        self.bulk = True
        self.waves = waves
        self._batcher: Batcher | None = None
        self.counts = {"set_based": 0, "as_written": 0}  # statements, over every page
        self._side: psycopg.Connection[Any] | None = None
        self._reader: psycopg.Connection[Any] | None = None
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="ledger-rebuild-read")
        self._ahead: tuple[tuple[int, int], Future[Any]] | None = None
        self._decoded: dict[int, LoggedEvent] = {}

    def setup(self, logged: Collection[str] = ()) -> None:
        """Create the tables (unlogged but those of the projections named in `logged`,
        without their plain indexes) and position rows."""
        self.database.create_schema(self.schema)
        conn = self.conn
        with conn.transaction():
            conn.execute(positions.DDL)
            for p in self.projections:
                for statement in split_ddl(p.ddl)[0]:
                    conn.execute(statement if p.name in logged else unlogged(statement))
                conn.execute(
                    "INSERT INTO projection_positions (name, position, version) VALUES (%s, 0, %s)"
                    " ON CONFLICT (name) DO NOTHING",
                    (p.name, p.version),
                )

    def finish(self, indexes: bool = True) -> None:
        """Make the tables logged and build their indexes (a scratch copy only compared
        and dropped needs neither); from here on apply events as the live projector does."""
        conn = self.conn
        with conn.transaction():
            for p in self.projections:
                for table in p.tables if indexes else ():
                    conn.execute(sql.SQL("ALTER TABLE {} SET LOGGED").format(sql.Identifier(table)))
                for statement in split_ddl(p.ddl)[1] if indexes else ():
                    conn.execute(statement)
                for table in p.tables:
                    conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(table)))
        conn.execute("RESET enable_hashjoin")
        conn.execute("RESET enable_mergejoin")
        conn.execute("RESET enable_seqscan")
        conn.commit()
        self.bulk = False
        self._ahead, self._decoded = None, {}
        self.page_size = min(self.page_size, 1000)

    def close(self) -> None:
        super().close()
        self._ahead = None
        self._pool.shutdown(wait=True)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="ledger-rebuild-read")
        for conn in (self._side, self._reader):
            if conn is not None:
                conn.close()
        self._side = self._reader = None
        self._batcher = None

    # ----- reading ahead ------------------------------------------------------------------
    # The next page is read and decoded in a thread while this one is applied: the
    # thread's Python runs while this one waits for the server.

    def _read(self, conn: psycopg.Connection[object], after: int, limit: int) -> list[Notification]:
        if not self.bulk:
            return super()._read(conn, after, limit)
        ahead, self._ahead = self._ahead, None
        if ahead is not None and ahead[0] == (after, limit):
            page, decoded = ahead[1].result()
        else:
            page, decoded = self._read_decoded(after, limit)
        self._decoded = decoded
        if len(page) == limit:
            key = (page[-1].id, limit)
            self._ahead = (key, self._pool.submit(self._read_decoded, *key))
        return page

    def _read_decoded(
        self, after: int, limit: int
    ) -> tuple[list[Notification], dict[int, LoggedEvent]]:
        if self._reader is None or self._reader.closed:
            self._reader = self.database.connect(self.schema, autocommit=True)
        page = log_page(self._reader, self.events_table, after, limit)
        return page, {n.id: self.decoder.decode(n) for n in page}

    def _side_conn(self) -> psycopg.Connection[Any]:
        if self._side is None or self._side.closed:
            self._side = self.database.connect(self.schema, autocommit=True)
        return self._side

    def _event(self, n: Notification) -> LoggedEvent:
        found = self._decoded.get(n.id)
        return found if found is not None else self.decoder.decode(n)

    def _apply(
        self,
        conn: psycopg.Connection[object],
        page: list[Notification],
        active: Sequence[Projection],
        at: dict[str, int],
        cap: dict[str, int],
    ) -> None:
        if not self.bulk:
            super()._apply(conn, page, active, at, cap)
            return
        if self._batcher is None or self._batcher.conn is not conn:
            self._batcher = Batcher(conn, self._side_conn, self.waves)
            self._batcher.counts = self.counts
            # A wave's rows find theirs by key: one index probe each, whatever the
            # planner thinks of tables it has no statistics for yet.
            conn.execute("SET enable_hashjoin = off")
            conn.execute("SET enable_mergejoin = off")
            conn.execute("SET enable_seqscan = off")
        statements: dict[str, list[Statement]] = {p.name: [] for p in active}
        ruleset = self.ledger.ruleset
        for n, wanting in self._wanted(page, active, at, cap):
            event = self._event(n)
            for p in wanting:
                statements[p.name].extend(p.statements(event, ruleset))
        for p in active:
            self._batcher.run(p, statements[p.name])
