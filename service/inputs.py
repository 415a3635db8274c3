"""Reading request bodies the v1 routes accept in several forms, and answering the client's `Accept`.

A route that takes media reads its body itself: JSON (validated by a pydantic model, errors naming
the field), `multipart/form-data` (files, plus a `request` field holding the JSON options), or a raw
video/image body. Anything else is a 415 that lists what is accepted.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.errors import ApiError

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")

NPY = "application/x-npy"
RAW_TYPES = ("video/", "image/", "application/octet-stream")
MAX_FORM_FILES = 4
MAX_FORM_FIELDS = 8


@dataclass
class Upload:
    filename: str | None
    content_type: str | None
    data: bytes


@dataclass
class Body:
    """What a request carried: its options (the JSON model) and any uploaded files by field name."""

    options: BaseModel | None
    files: dict[str, Upload] = field(default_factory=dict)


def media_type(request: Request) -> str:
    return (request.headers.get("content-type") or "").split(";")[0].strip().lower()


def is_upload(request: Request) -> bool:
    """A file upload (multipart or a raw video/image body): what the decode stage will work on."""
    kind = media_type(request)
    return kind == "multipart/form-data" or kind.startswith(("video/", "image/"))


def parse_json(model: type[M], raw: bytes | str, prefix: tuple[str, ...] = ()) -> M:
    """Validate JSON text against `model`; a failure becomes a 422 naming each bad field."""
    try:
        return model.model_validate_json(raw)
    except ValidationError as err:
        errors = [{**e, "loc": (*prefix, *e["loc"])} for e in err.errors(include_url=False, include_context=False, include_input=False)]
        raise RequestValidationError(errors) from None


async def read_body(
    request: Request,
    model: type[M],
    *,
    upload_fields: tuple[str, ...],
    max_part_bytes: int,
    accept_raw: bool = True,
    options_field: bool = True,
    form_model: type[BaseModel] | None = None,
) -> Body:
    """JSON -> `Body(options)`; multipart -> `Body(options from the "request" field or None, files)`;
    a raw video/image body -> `Body(None, {upload_fields[0]: ...})`. `options_field=False`: the
    multipart form takes only the files (its options, if any, are query parameters), as documented;
    `form_model`: the model of a multipart `request` field, when it is not the JSON body's (a form
    whose file stands for some of the body's fields)."""
    kind = media_type(request)
    if kind == "application/json":
        return Body(parse_json(model, await request.body()))
    if kind == "multipart/form-data":
        try:
            form = await request.form(max_files=MAX_FORM_FILES, max_fields=MAX_FORM_FIELDS,
                                      max_part_size=max_part_bytes)
        except StarletteHTTPException as err:  # Starlette's multipart parser: too many parts, a part too large
            if isinstance(err, ApiError) or err.status_code != 400:
                raise
            raise ApiError(
                400, "bad_multipart", f"the multipart body was refused: {err.detail}",
                f"send the files ({', '.join(upload_fields)}) and at most one `request` field of JSON options",
            ) from None
        files, options = {}, None
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                if name not in upload_fields:
                    raise ApiError(422, "unexpected_field", f"unexpected file field {name!r}",
                                   f"upload the file as one of: {', '.join(upload_fields)}")
                files[name] = Upload(value.filename, value.content_type, await value.read())
            elif name == "request" and options_field:
                options = parse_json(form_model or model, value, ("request",))
            else:
                where = "in a `request` field" if options_field else "as a JSON body instead of a form"
                raise ApiError(422, "unexpected_field", f"unexpected form field {name!r}",
                               f"upload the files as {', '.join(upload_fields)}; send options as JSON {where}")
        await form.close()
        return Body(options, files)
    if accept_raw and kind.startswith(RAW_TYPES):
        return Body(None, {upload_fields[0]: Upload(None, kind, await request.body())})
    accepted = ["application/json", "multipart/form-data"] + (["video/*", "image/*"] if accept_raw else [])
    raise ApiError(
        415,
        "unsupported_media_type",
        f"Content-Type {kind or '(none)'} is not accepted here; send one of: {', '.join(accepted)}",
        "see /docs for each form's fields",
    )


def wants_npy(request: Request) -> bool:
    """True when the client asked for NumPy's .npy format (`Accept: application/x-npy`)."""
    return NPY in (request.headers.get("accept") or "").lower()


def npy_response(array: np.ndarray, headers: dict[str, str] | None = None) -> Response:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return Response(buf.getvalue(), media_type=NPY, headers=headers)


async def cancel_on_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Await `work`; if the client disconnects first, cancel it (its queued engine calls are withdrawn
    and never computed). Call after the body has been read."""
    task = asyncio.ensure_future(work)

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        raise
    finally:
        watcher.cancel()
    if not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        raise ApiError(499, "client_closed_request", "the client disconnected; the work was cancelled")
    return task.result()
