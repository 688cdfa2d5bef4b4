"""The project's keys and its export/import: their requests, built once, and the methods
:class:`~anamnesis.Anamnesis` (``AdminMethods``) and :class:`~anamnesis.AsyncAnamnesis`
(``AsyncAdminMethods``) send them with. All of them need a key with the ``admin`` scope."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Sequence
from typing import IO, Literal, Protocol, TypeVar

import httpx

from anamnesis import _routes as routes
from anamnesis._base import BaseClient
from anamnesis._models import ImportReceipt, Key, KeyCreated, Results
from anamnesis._routes import Call

T = TypeVar("T")
KeyScope = Literal["read", "write", "admin"]
NDJSON = "application/x-ndjson"
CHUNK = 1 << 16


def create_key_call(name: str | None, scopes: Sequence[KeyScope]) -> Call[KeyCreated]:
    return Call("POST", routes.CREATE_KEY.path(), KeyCreated.model_validate,
                json={"name": name, "scopes": list(scopes)})


def list_keys_call() -> Call[list[Key]]:
    parse = Results[Key].model_validate
    return routes.LIST_KEYS.call(lambda b: parse(b).results)


def revoke_key_call(prefix: str) -> Call[None]:
    return routes.REVOKE_KEY.call(lambda _body: None, prefix=prefix)


def import_call(ndjson: bytes | IO[bytes]) -> Call[ImportReceipt]:
    return Call("POST", routes.IMPORT.path(), ImportReceipt.model_validate, content=ndjson,
                content_type=NDJSON)


def export_call() -> Call[None]:
    return routes.EXPORT.call(lambda _body: None)


class _Sends(Protocol):
    """What the admin methods need of the blocking client they are mixed into."""

    _http: httpx.Client

    def _send(self, call: Call[T]) -> T: ...


class _SendsAsync(Protocol):
    """What the admin methods need of the async client they are mixed into."""

    _http: httpx.AsyncClient

    def _send(self, call: Call[T]) -> Awaitable[T]: ...


class AdminMethods:
    """The key and transfer methods of the blocking client."""

    def create_key(
        self: _Sends, *, name: str | None = None, scopes: Sequence[KeyScope] = ("read", "write")
    ) -> KeyCreated:
        """A new key of this project; its secret (``key``) is in this answer only."""
        return self._send(create_key_call(name, scopes))

    def list_keys(self: _Sends) -> list[Key]:
        """The project's keys, revoked ones too, oldest first (prefixes, never the keys)."""
        return self._send(list_keys_call())

    def revoke_key(self: _Sends, prefix: str) -> None:
        """Revoke the project's key with this prefix; :class:`NotFoundError` if none."""
        self._send(revoke_key_call(prefix))

    def export_project(self: _Sends, into: IO[bytes]) -> int:
        """Write the whole project, as NDJSON, into the binary file ``into`` as it streams in,
        and return the number of bytes written (feed the file to :meth:`import_project`)."""
        call = export_call()
        try:
            with self._http.stream(call.method, call.path) as response:
                if response.is_error:
                    response.read()
                    raise BaseClient._api_error(response)
                written = 0
                for chunk in response.iter_bytes():
                    written += into.write(chunk)
                return written
        except httpx.TransportError as exc:
            raise BaseClient._transport_error(exc, call) from exc

    def import_project(self: _Sends, ndjson: bytes | IO[bytes]) -> ImportReceipt:
        """Import an export (bytes or a binary file, streamed) into this project. Every line is
        checked first: any bad line raises :class:`ValidationError` naming them, and nothing is
        written. Records keep their ids, so importing again adds only what is missing."""
        return self._send(import_call(ndjson))


async def _chunks(source: IO[bytes]) -> AsyncIterator[bytes]:
    while chunk := source.read(CHUNK):
        yield chunk


def async_content(content: bytes | IO[bytes] | None) -> bytes | AsyncIterator[bytes] | None:
    """A request body ``httpx.AsyncClient`` can send: a file is read in chunks as it goes."""
    if content is None or isinstance(content, bytes):
        return content
    return _chunks(content)


class AsyncAdminMethods:
    """The key and transfer methods of the async client (contracts: :class:`AdminMethods`)."""

    async def create_key(
        self: _SendsAsync, *, name: str | None = None,
        scopes: Sequence[KeyScope] = ("read", "write"),
    ) -> KeyCreated:
        """See :meth:`Anamnesis.create_key`."""
        return await self._send(create_key_call(name, scopes))

    async def list_keys(self: _SendsAsync) -> list[Key]:
        """See :meth:`Anamnesis.list_keys`."""
        return await self._send(list_keys_call())

    async def revoke_key(self: _SendsAsync, prefix: str) -> None:
        """See :meth:`Anamnesis.revoke_key`."""
        await self._send(revoke_key_call(prefix))

    async def export_project(self: _SendsAsync, into: IO[bytes]) -> int:
        """See :meth:`Anamnesis.export_project` (``into`` is written to synchronously)."""
        call = export_call()
        try:
            async with self._http.stream(call.method, call.path) as response:
                if response.is_error:
                    await response.aread()
                    raise BaseClient._api_error(response)
                written = 0
                async for chunk in response.aiter_bytes():
                    written += into.write(chunk)
                return written
        except httpx.TransportError as exc:
            raise BaseClient._transport_error(exc, call) from exc

    async def import_project(self: _SendsAsync, ndjson: bytes | IO[bytes]) -> ImportReceipt:
        """See :meth:`Anamnesis.import_project`."""
        return await self._send(import_call(ndjson))
