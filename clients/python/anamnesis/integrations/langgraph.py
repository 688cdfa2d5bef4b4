"""A LangGraph long-term memory store (``BaseStore``) kept in Anamnesis.

>>> from anamnesis import Anamnesis
>>> from anamnesis.integrations.langgraph import AnamnesisStore
>>> store = AnamnesisStore(Anamnesis(api_key="..."), user_label=1)
>>> graph = builder.compile(store=store, checkpointer=InMemorySaver())

How items map onto memories (every item is one memory, so the REST API, the other SDKs and
the console see it too):

* an item is a ``kind: message`` memory stored verbatim (``infer=False``), scoped to
  ``agent_id`` (default ``"langgraph"``) and, when ``user_label`` is set, to
  ``user_id = namespace[user_label]`` (a namespace too short to have that label leaves
  ``user_id`` unset): erasing that user erases the items of their namespaces;
* its ``metadata["langgraph"]`` holds the whole item: ``namespace`` (the list),
  ``labels`` (``{"0": label, ...}``, what prefix searches filter on), ``depth``, ``key`` and
  ``value``, so the mapping reverses without loss;
* its text, what search embeds and matches words in, is the value's text at the index
  ``fields`` (the store's, or the put's ``index=[...]``; several joined by spaces), else
  the value as JSON.

Semantics: a put to an existing key updates that memory in place (``created_at`` kept, the
old value kept in its history); ``put(..., None)`` and ``delete`` erase it. ``search`` with a
``query`` is the service's search (hybrid ranking by default; ``filter`` evaluated by the
server); without one it lists the namespace's items, newest first, and applies ``filter``
as it reads. Values are limited by the service's metadata limit (16 KiB as JSON) and texts
by its memory text limit; what the service refuses raises the SDK's :class:`APIError`
subclasses. TTLs are not supported (``supports_ttl`` is False).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import takewhile
from typing import Any, Literal

from langgraph.store.base import (
    BaseStore,
    GetOp,
    Item,
    ListNamespacesOp,
    MatchCondition,
    Op,
    PutOp,
    Result,
    SearchItem,
    SearchOp,
    get_text_at_path,
    validate_op_namespace,
)

from anamnesis import Anamnesis, AsyncAnamnesis, Memory, SearchHit

__all__ = ["AnamnesisStore"]

FIELD = "langgraph"  # the metadata key holding the item
_VALUE = f"metadata.{FIELD}.value"
# Copies of one (namespace, key) a lookup reads: more than one only after concurrent first
# puts of the same key, which the next put of that key folds back into one.
_COPIES = 10
# The lookup's query text: the namespace and key filters decide what matches, and one fixed
# text keeps the server's query-embedding cache warm.
_LOOKUP = "langgraph item"
# Items read per list page: values are up to 16 KiB each, so a page stays a few MiB.
_PAGE = 200
_OPERATORS = {"$eq": "eq", "$ne": "ne", "$gt": "gt", "$gte": "gte", "$lt": "lt", "$lte": "lte"}
_MISSING = object()


@dataclass(frozen=True)
class _Call:
    """One SDK method call, made by whichever client the batch runs on."""

    method: str
    kwargs: dict[str, Any]


@dataclass(frozen=True)
class _Scan:
    """Read ``get_all(**kwargs)`` memory by memory until ``take`` answers False."""

    kwargs: dict[str, Any]
    take: Callable[[Memory], bool]


# Each operation is written once, as a generator that yields the SDK requests it needs and
# is sent their answers; ``batch`` runs it on the sync client, ``abatch`` on the async one.
_Plan = Generator[_Call | _Scan, Any, Result]


class AnamnesisStore(BaseStore):
    """A ``BaseStore`` over an :class:`Anamnesis` (for ``batch`` and the sync methods) and/or
    an :class:`AsyncAnamnesis` (for ``abatch`` and the ``a*`` methods).

    With only a sync client, the async methods run it in a worker thread; with only an async
    client, the sync methods raise ``RuntimeError``. ``agent_id`` scopes every item;
    ``user_label`` is the position of the namespace label that becomes ``user_id``;
    ``fields`` are the value paths whose text is embedded (LangGraph's path syntax, ``"$"``
    for the whole value); ``ranking`` is passed to the service's search (None: its default).
    """

    def __init__(
        self,
        client: Anamnesis | None = None,
        *,
        aclient: AsyncAnamnesis | None = None,
        agent_id: str = "langgraph",
        user_label: int | None = None,
        fields: Sequence[str] = ("$",),
        ranking: Literal["hybrid", "dense", "lexical"] | None = None,
    ) -> None:
        if client is None and aclient is None:
            raise ValueError("AnamnesisStore needs client=Anamnesis(...) and/or "
                             "aclient=AsyncAnamnesis(...)")
        if user_label is not None and user_label < 0:
            raise ValueError("user_label is a position from the namespace's start (0, 1, ...)")
        self._client = client
        self._aclient = aclient
        self._agent_id = agent_id
        self._user_label = user_label
        self._fields = list(fields)
        self._ranking = ranking

    # -- drivers ---------------------------------------------------------------------------

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        """Run ``ops`` in order on the sync client; one result per op."""
        client = self._client
        if client is None:
            raise RuntimeError("this AnamnesisStore has only an async client: use the a* "
                               "methods, or pass client=Anamnesis(...)")
        results: list[Result] = []
        for plan in self._plans(ops):
            try:
                request = next(plan)
                while True:
                    answer = None
                    if isinstance(request, _Scan):
                        for memory in client.get_all(**request.kwargs):
                            if not request.take(memory):
                                break
                    else:
                        answer = getattr(client, request.method)(**request.kwargs)
                    request = plan.send(answer)
            except StopIteration as done:
                results.append(done.value)
        return results

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        """Run ``ops`` in order on the async client (or the sync one in a thread)."""
        client = self._aclient
        if client is None:
            return await asyncio.to_thread(self.batch, list(ops))
        results: list[Result] = []
        for plan in self._plans(ops):
            try:
                request = next(plan)
                while True:
                    answer = None
                    if isinstance(request, _Scan):
                        async for memory in client.get_all(**request.kwargs):
                            if not request.take(memory):
                                break
                    else:
                        answer = await getattr(client, request.method)(**request.kwargs)
                    request = plan.send(answer)
            except StopIteration as done:
                results.append(done.value)
        return results

    def _plans(self, ops: Iterable[Op]) -> list[_Plan]:
        """One plan per op, every op checked before any runs."""
        ops = list(ops)
        for op in ops:
            validate_op_namespace(op)
            if isinstance(op, PutOp) and op.ttl is not None:
                raise NotImplementedError("AnamnesisStore does not support TTLs")
        plans: list[_Plan] = []
        for op in ops:
            if isinstance(op, GetOp):
                plans.append(self._get(op))
            elif isinstance(op, PutOp):
                plans.append(self._put(op))
            elif isinstance(op, SearchOp):
                plans.append(self._search(op))
            elif isinstance(op, ListNamespacesOp):
                plans.append(self._list_namespaces(op))
            else:
                raise TypeError(f"unknown store operation: {op!r}")
        return plans

    # -- operations ------------------------------------------------------------------------

    def _get(self, op: GetOp) -> _Plan:
        found = yield from self._find(op.namespace, op.key)
        return _item(found[0]) if found else None

    def _put(self, op: PutOp) -> _Plan:
        found = yield from self._find(op.namespace, op.key)
        kept = found[:1] if op.value is not None else []
        for copy in found[len(kept):]:
            yield _Call("delete", {"memory_id": copy.id})
        if op.value is None:
            return None
        value = dict(op.value)
        text = self._text(value, op.index)
        metadata = {FIELD: {
            "namespace": list(op.namespace),
            "labels": {str(i): label for i, label in enumerate(op.namespace)},
            "depth": len(op.namespace), "key": op.key, "value": value,
        }}
        if kept:
            yield _Call("update", {"memory_id": kept[0].id, "text": text, "metadata": metadata})
        else:
            yield _Call("add", {"messages": [{"role": "user", "content": text}], "infer": False,
                                "metadata": metadata, **self._scope(op.namespace)})
        return None

    def _search(self, op: SearchOp) -> _Plan:
        values = _value_filter(op.filter or {})  # checks the filter whichever path runs
        if op.query:
            filters = {**_prefix_filter(op.namespace_prefix), **values}
            hits: list[SearchHit] = yield _Call("search", {
                "query": op.query, "filters": filters, "top_k": op.offset + op.limit,
                "ranking": self._ranking, **self._scope(op.namespace_prefix)})
            return [_search_item(hit, hit.score) for hit in hits[op.offset:]]
        end = op.offset + op.limit
        found: list[Memory] = []

        def take(memory: Memory) -> bool:
            namespace = _namespace(memory)
            if namespace is not None and namespace[:len(op.namespace_prefix)] == \
                    op.namespace_prefix and _satisfies(memory.metadata[FIELD]["value"],
                                                       op.filter or {}):
                found.append(memory)
            return len(found) < end

        if end > 0:
            yield self._scan(op.namespace_prefix, take, min(end, _PAGE))
        return [_search_item(memory, None) for memory in found[op.offset:end]]

    def _list_namespaces(self, op: ListNamespacesOp) -> _Plan:
        conditions = op.match_conditions or ()
        seen: set[tuple[str, ...]] = set()

        def take(memory: Memory) -> bool:
            namespace = _namespace(memory)
            if namespace is not None and all(_matches(c, namespace) for c in conditions):
                seen.add(namespace if op.max_depth is None else namespace[:op.max_depth])
            return True

        # A prefix pattern's labels before its first wildcard narrow the scope listed.
        fixed: tuple[str, ...] = ()
        for condition in conditions:
            if condition.match_type == "prefix":
                fixed = tuple(takewhile(lambda label: label != "*", condition.path))
        yield self._scan(fixed, take, _PAGE)
        return sorted(seen)[op.offset:op.offset + op.limit]

    # -- helpers ---------------------------------------------------------------------------

    def _find(self, namespace: tuple[str, ...], key: str
              ) -> Generator[_Call | _Scan, Any, list[SearchHit]]:
        """The memories holding (namespace, key), most recently updated first."""
        filters = {f"metadata.{FIELD}.namespace": {"eq": list(namespace)},
                   f"metadata.{FIELD}.key": {"eq": key}}
        # Dense ranking: the service scores every memory a selective filter lets through.
        hits: list[SearchHit] = yield _Call("search", {
            "query": _LOOKUP, "filters": filters, "top_k": _COPIES, "ranking": "dense",
            **self._scope(namespace)})
        return sorted(hits, key=lambda hit: hit.updated_at, reverse=True)

    def _scan(self, prefix: tuple[str, ...], take: Callable[[Memory], bool],
              page_size: int) -> _Scan:
        return _Scan({"kind": "message", "page_size": page_size, **self._scope(prefix)}, take)

    def _scope(self, prefix: tuple[str, ...]) -> dict[str, str]:
        """The scope of the items under ``prefix`` (a namespace is its own prefix)."""
        scope = {"agent_id": self._agent_id}
        if self._user_label is not None and len(prefix) > self._user_label:
            scope["user_id"] = prefix[self._user_label]
        return scope

    def _text(self, value: dict[str, Any], index: Literal[False] | list[str] | None) -> str:
        # The service embeds every memory, so index=False embeds the whole value.
        paths = ["$"] if index is False else (self._fields if index is None else index)
        texts = [text for path in paths for text in get_text_at_path(value, path)]
        joined = " ".join(text for text in texts if text.strip())
        return joined or json.dumps(value, sort_keys=True, ensure_ascii=False)


def _namespace(memory: Memory) -> tuple[str, ...] | None:
    """The item's namespace, or None for a memory that is not a LangGraph item."""
    data = memory.metadata.get(FIELD)
    if not isinstance(data, dict) or not isinstance(data.get("namespace"), list):
        return None
    return tuple(data["namespace"])


def _item(memory: Memory) -> Item:
    data = memory.metadata[FIELD]
    return Item(value=data["value"], key=data["key"], namespace=tuple(data["namespace"]),
                created_at=memory.created_at, updated_at=memory.updated_at)


def _search_item(memory: Memory, score: float | None) -> SearchItem:
    data = memory.metadata[FIELD]
    return SearchItem(tuple(data["namespace"]), data["key"], data["value"], memory.created_at,
                      memory.updated_at, score)


def _prefix_filter(prefix: tuple[str, ...]) -> dict[str, Any]:
    """The service filter for items whose namespace starts with ``prefix``."""
    filters: dict[str, Any] = {f"metadata.{FIELD}.depth": {"gte": max(len(prefix), 1)}}
    for position, label in enumerate(prefix):
        filters[f"metadata.{FIELD}.labels.{position}"] = {"eq": label}
    return filters


def _value_filter(wanted: Mapping[str, Any], path: str = _VALUE) -> dict[str, Any]:
    """A LangGraph ``filter`` on item values as the service's filter on their metadata: a
    plain value is equality, an object of ``$`` operators compares, a plain object matches
    its keys recursively."""
    filters: dict[str, Any] = {}
    for key, condition in wanted.items():
        here = f"{path}.{_filter_key(key)}"
        if isinstance(condition, Mapping) and _is_operators(condition):
            filters[here] = {_OPERATORS[op]: operand for op, operand in condition.items()}
        elif isinstance(condition, Mapping):
            filters.update(_value_filter(condition, here))
        else:
            filters[here] = {"eq": condition}
    return filters


def _satisfies(value: Any, wanted: Mapping[str, Any]) -> bool:
    """Whether a value passes a LangGraph ``filter``, judged as the service judges
    :func:`_value_filter`'s translation (used where items are listed, not searched)."""
    for key, condition in wanted.items():
        have = value.get(_filter_key(key), _MISSING) if isinstance(value, dict) else _MISSING
        if isinstance(condition, Mapping) and _is_operators(condition):
            if not all(_compare(have, op, operand) for op, operand in condition.items()):
                return False
        elif isinstance(condition, Mapping):
            if not _satisfies(have, condition):
                return False
        elif not _compare(have, "$eq", condition):
            return False
    return True


def _filter_key(key: str) -> str:
    if not isinstance(key, str) or not key or "." in key:
        raise ValueError(f"filter keys are non-empty strings without '.', not {key!r}")
    return key


def _is_operators(condition: Mapping[str, Any]) -> bool:
    if not any(isinstance(op, str) and op.startswith("$") for op in condition):
        return False
    unknown = [op for op in condition if op not in _OPERATORS]
    if unknown:
        raise ValueError(f"unsupported filter operator {unknown[0]!r} "
                         f"(use {', '.join(_OPERATORS)})")
    return True


def _compare(have: Any, op: str, operand: Any) -> bool:
    if op in ("$eq", "$ne"):
        # JSON equality: booleans are not numbers, and tuples are lists.
        same = have is not _MISSING and isinstance(have, bool) == isinstance(operand, bool) \
            and have == json.loads(json.dumps(operand))
        return same if op == "$eq" else not same
    numbers = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (have, operand))
    if not numbers and not (isinstance(have, str) and isinstance(operand, str)):
        return False
    outcome: bool = {"$gt": have > operand, "$gte": have >= operand, "$lt": have < operand,
                     "$lte": have <= operand}[op]
    return outcome


def _matches(condition: MatchCondition, namespace: tuple[str, ...]) -> bool:
    """LangGraph's namespace match: ``path`` (``"*"`` for any label) at the namespace's start
    (``"prefix"``) or end (``"suffix"``)."""
    path = condition.path
    if len(namespace) < len(path):
        return False
    part = namespace[:len(path)] if condition.match_type == "prefix" else \
        namespace[len(namespace) - len(path):]
    return all(want in ("*", have) for want, have in zip(path, part, strict=True))

