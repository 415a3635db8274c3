"""Request and response bodies of the v1 API (pydantic; they make the OpenAPI schema at /docs).

Arrays travel as nested JSON lists of finite numbers (NaN and infinities are refused where they
are parsed, naming the field); images travel as base64 PNG/JPEG strings of exactly the model's size.
Uploads (multipart or a raw video body) are described in the OpenAPI document by `openapi_body`.
"""

from __future__ import annotations

import itertools
import math
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

# Arrays a client sends are checked as a whole before pydantic looks at their items: a body of a
# million wrong items would otherwise cost a million per-item errors (seconds of CPU and a reply
# far larger than the request). One error per array, naming the first bad item, is enough to fix it.
MAX_ARRAY_ROWS = 4096
MAX_ARRAY_WIDTH = 4096
MAX_BODY_KEYS = 64
MAX_BAD_ITEMS = 20  # bad items of one array reported one by one


_NUMBER_TYPES = (int, float, bool)  # exact types JSON parses to (bool: pydantic's own error names it)


def _is_number(x: Any) -> bool:
    return type(x) in _NUMBER_TYPES and math.isfinite(x)


def _too_many_bad(rows: list[list[Any]]) -> None:
    """Up to MAX_BAD_ITEMS bad items are left to pydantic, whose errors name each one
    (`latents[0][3]`); more are one error for the whole array, naming the first."""
    try:
        if np.isfinite(np.asarray(rows, dtype=np.float64)).all():
            return  # the common case, without a Python loop over the items
    except (ValueError, TypeError):
        pass  # ragged (pydantic and the model's own check say so) or not numbers
    bad = ((i, j) for i, row in enumerate(rows) for j, x in enumerate(row) if not _is_number(x))
    first = list(itertools.islice(bad, MAX_BAD_ITEMS + 1))  # stop as soon as there are too many
    if len(first) > MAX_BAD_ITEMS:
        i, j = first[0]
        raise ValueError(f"more than {MAX_BAD_ITEMS} values are not finite numbers, the first at [{i}][{j}]")


def _numeric_vector(value: Any) -> Any:
    """A JSON list of finite numbers, checked in one pass (see MAX_ARRAY_WIDTH)."""
    if not isinstance(value, list):
        return value  # pydantic's own error names the expected type
    if len(value) > MAX_ARRAY_WIDTH:
        raise ValueError(f"has {len(value)} values; at most {MAX_ARRAY_WIDTH}")
    _too_many_bad([value])
    return value


def _numeric_matrix(value: Any) -> Any:
    """A JSON `[rows, width]` list of lists of finite numbers, checked in one pass."""
    if not isinstance(value, list):
        return value
    if len(value) > MAX_ARRAY_ROWS:
        raise ValueError(f"has {len(value)} rows; at most {MAX_ARRAY_ROWS}")
    for i, row in enumerate(value):
        if not isinstance(row, list):
            raise ValueError(f"row [{i}] is not a list: send a [steps, dims] array (a list of lists of numbers)")
        if len(row) > MAX_ARRAY_WIDTH:
            raise ValueError(f"row [{i}] has {len(row)} values; at most {MAX_ARRAY_WIDTH}")
    _too_many_bad(value)
    return value


FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
Vector = list[FiniteFloat]
Matrix = list[Vector]
VectorIn = Annotated[Vector, BeforeValidator(_numeric_vector)]  # request bodies: checked whole
MatrixIn = Annotated[Matrix, BeforeValidator(_numeric_matrix)]
Base64Image = Annotated[
    str,
    Field(
        min_length=1,
        description="a PNG or JPEG image, base64-encoded (a `data:image/png;base64,` prefix is allowed); "
        "exactly the model's image size (GET /v1/models: image_size). URLs are not fetched.",
    ),
]
DeadlineMs = Annotated[
    float | None,
    Field(None, gt=0, le=600_000, description="answer within this many milliseconds or get a 504 (or, for "
          "/v1/plan, the best plan found so far)"),
]


class RequestBody(BaseModel):
    """A request's JSON: unknown fields are refused (a typo is an error, not a silently ignored key)."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _few_keys(cls, data: Any) -> Any:
        # Each unknown key is an error of its own: a body of 10^5 keys would cost 10^5 of them.
        if isinstance(data, dict) and len(data) > MAX_BODY_KEYS:
            raise ValueError(f"the body has {len(data)} keys; this request takes at most {len(cls.model_fields)}")
        return data


def _rectangular(name: str, rows: list[list[float]] | None, width: int | None = None) -> None:
    if rows is None:
        return
    if not rows:
        raise ValueError(f"{name} is empty: give at least one row")
    widths = {len(r) for r in rows}
    if len(widths) != 1:
        raise ValueError(f"{name} must be a rectangular [steps, dims] array; rows have lengths {sorted(widths)}")
    if 0 in widths:
        raise ValueError(f"{name} rows are empty")


# ----------------------------------------------------------------------------- shared pieces
class ModelRef(BaseModel):
    name: str
    version: int
    runtime: str


class SourceOut(BaseModel):
    container: str
    codec: str
    width: int
    height: int
    fps: float
    duration_s: float | None


# ----------------------------------------------------------------------------- latent actions
class LatentActionsJson(RequestBody):
    """JSON form of POST /v1/latent-actions (the other form is a video upload)."""

    frames: list[Base64Image] = Field(min_length=1, max_length=MAX_ARRAY_ROWS, description="the clip's frames in order")
    fps: float | None = Field(None, gt=0, le=1000, description="rate the frames were taken at (timestamps); "
                              "defaults to the model's fps")


class LatentActionsResponse(BaseModel):
    model: ModelRef
    latent_dim: int
    fps: float = Field(description="frame rate of the frames used")
    frames_used: int = Field(description="frames encoded (a trailing odd frame is dropped: 2 frames make a state)")
    steps: int = Field(description="number of latent actions (states - 1)")
    latents: Matrix = Field(description="[steps, latent_dim]: the action between state i and state i+1")
    start_s: list[float] = Field(description="per step: time of the first frame of state i")
    end_s: list[float] = Field(description="per step: time of the first frame of state i+1")
    source: SourceOut | None = Field(None, description="the uploaded video, when one was uploaded")
    resized_from: list[int] | None = Field(
        None, description="[width, height] of the uploaded video when it was smaller than the model's crop and "
        "was resized up to it (LAWM_SMALL_VIDEOS=refuse refuses such video instead)",
    )
    timing: dict[str, float]


# ----------------------------------------------------------------------------- rollouts
class RolloutRequest(RequestBody):
    """POST /v1/rollouts as JSON, or as the `request` field of a multipart upload beside a `context` clip."""

    frames: list[Base64Image] | None = Field(
        None, max_length=MAX_ARRAY_ROWS, description="context frames (omit when uploading a `context` clip); one frame is "
        "duplicated into a state, as the planner does",
    )
    latents: MatrixIn | None = Field(None, description="[steps, latent_dim] latent actions to apply")
    actions: MatrixIn | None = Field(
        None, description="[steps, action_dim] real actions, mapped to latents by the model's controller; each "
        "step is the planner's step (controller, then one world-model step from the current state)",
    )
    decode: Literal["none", "mp4", "png"] = Field(
        "none", description="also decode [last context state, predicted states] to frames: an MP4 or a PNG strip"
    )
    include_states: bool = Field(True, description="return the predicted states (large: steps x tokens x dim)")
    deadline_ms: DeadlineMs = None

    @model_validator(mode="after")
    def _one_kind(self) -> RolloutRequest:
        if (self.latents is None) == (self.actions is None):
            raise ValueError("give exactly one of `latents` or `actions`")
        _rectangular("latents", self.latents)
        _rectangular("actions", self.actions)
        return self


class RolloutResponse(BaseModel):
    model: ModelRef
    steps: int
    driven_by: Literal["latents", "actions"]
    context_states: int = Field(description="observed states the rollout starts from")
    resized_from: list[int] | None = Field(
        None, description="[width, height] of the uploaded video when it was smaller than the model's crop and "
        "was resized up to it (LAWM_SMALL_VIDEOS=refuse refuses such video instead)",
    )
    state_shape: list[int] = Field(description="[tokens, dim] of one state")
    states: list[Matrix] | None = Field(None, description="[steps, tokens, dim] predicted states")
    latents: Matrix = Field(description="[steps, latent_dim] the latents applied (the controller's, for actions)")
    video: str | None = Field(None, description="base64 MP4 or PNG strip of the decoded frames, when asked")
    video_content_type: str | None = None
    video_frames: int | None = Field(None, description="frames in `video` (the first 2 show the last context state)")
    timing: dict[str, float]


# ----------------------------------------------------------------------------- goals and planning
class GoalRequest(RequestBody):
    image: Base64Image


class GoalResponse(BaseModel):
    goal_id: str = Field(description="pass as `goal_id` to POST /v1/plan; the same image gives the same id")
    state_shape: list[int]
    model: ModelRef
    cached_goals: int
    timing: dict[str, float]


class PlanRequest(RequestBody):
    observation: Base64Image = Field(description="the current camera frame")
    goal_id: str | None = Field(None, max_length=128, description="from POST /v1/goals")
    goal: Base64Image | None = Field(None, description="a goal image, instead of `goal_id`")
    preset: Literal["droid", "recon"] | None = Field(
        None, description="planner protocol; default: the preset whose action size matches the controller"
    )
    action_low: VectorIn | None = Field(None, description="lower action bound per dim (sets the action size)")
    action_high: VectorIn | None = Field(None, description="upper action bound per dim")
    overrides: dict[str, Any] = Field(
        default_factory=dict,
        description="planner settings to change (horizon, samples, elites, iterations, init_std, init_mean, "
        "momentum, method, temperature, straight_line, cost, seed, ...); validated by the planner",
    )
    deadline_ms: DeadlineMs = None

    @model_validator(mode="after")
    def _one_goal(self) -> PlanRequest:
        if (self.goal_id is None) == (self.goal is None):
            raise ValueError("give exactly one of `goal_id` (from POST /v1/goals) or `goal` (an image)")
        if (self.action_low is None) != (self.action_high is None):
            raise ValueError("give both `action_low` and `action_high`, or neither")
        return self


class PlanResponse(BaseModel):
    model: ModelRef
    actions: Matrix = Field(description="[horizon, action_dim] the best sequence found; execute actions[0]")
    first_action: Vector
    cost: float | None = Field(description="predicted cost of `actions` (null when no candidate was evaluated)")
    iterations: int
    evaluations: int
    deadline_hit: bool
    history: list[float | None] = Field(description="lowest cost of each iteration")
    planner: dict[str, Any] = Field(description="the planner settings used")
    goal_id: str
    timing: dict[str, float] = Field(
        description="seconds: total, decode, encode, plan (the search), step (inside world-model steps, queueing "
        "included), controller and world_model (component calls), cost"
    )


# ----------------------------------------------------------------------------- models
class ComponentInfo(BaseModel):
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    max_batch_size: int = Field(description="rows per batch in this server's batcher")
    warm_batch_sizes: list[int]


class PrecisionInfo(BaseModel):
    components: dict[str, str] = Field(description="precision each component runs at: fp32 | bf16 (torch), or the export's")
    source: str = Field(
        description="where it came from: setting (LAWM_PRECISION), recorded plan-parity check (LAWM_PRECISION=auto and "
        "`lawm bench precision --record`), default (fp32), or export (onnxruntime / TensorRT graphs as exported)"
    )
    cpu_bf16: str = Field(description="this CPU's native bf16: amx | avx512_bf16 | none")


class ModelInfo(BaseModel):
    name: str
    version: int
    runtime: str
    ready: bool
    image_size: int
    fps: float
    tubelet: int
    latent_dim: int
    state_shape: list[int]
    max_steps: int = Field(description="longest world-model / decoder context, in states")
    action_dim: int | None = Field(description="real action size of the controller; null without a controller")
    planner_presets: dict[str, dict[str, Any]]
    components: dict[str, ComponentInfo]
    precision: PrecisionInfo
    limits: dict[str, int | float]


class ModelsResponse(BaseModel):
    models: list[ModelInfo]


# ----------------------------------------------------------------------------- OpenAPI for uploads
# Models that routes read themselves (named by `openapi_body`): FastAPI does not see them, so the
# app adds their schemas to the OpenAPI document, or its `$ref`s to them would dangle.
REQUEST_MODELS: list[type[BaseModel]] = []


def openapi_body(json_model: type[BaseModel], upload_fields: dict[str, str], *, raw_types: tuple[str, ...] = ()) -> dict[str, Any]:
    """`openapi_extra` for a route that reads JSON or a multipart upload (or a raw body) itself."""
    if json_model not in REQUEST_MODELS:
        REQUEST_MODELS.append(json_model)
    properties: dict[str, Any] = {
        name: {"type": "string", "format": "binary", "description": desc} if name != "request" else
        {"type": "string", "description": desc}
        for name, desc in upload_fields.items()
    }
    content: dict[str, Any] = {
        "application/json": {"schema": {"$ref": f"#/components/schemas/{json_model.__name__}"}},
        # exactly the fields the route reads: any other is refused (422 unexpected_field)
        "multipart/form-data": {"schema": {"type": "object", "properties": properties, "additionalProperties": False}},
    }
    for media_type in raw_types:
        content[media_type] = {"schema": {"type": "string", "format": "binary"}}
    return {"requestBody": {"required": True, "content": content}}




class ErrorDetail(BaseModel):
    code: str = Field(description="what went wrong, for a client to branch on (e.g. video_too_small)")
    message: str = Field(description="what was wrong, for a person")
    hint: str | None = Field(None, description="how to fix it")
    request_id: str | None = Field(None, description="the X-Request-ID of the request (in the server log too)")
    fields: list[dict[str, str]] | None = Field(None, description="validation errors: the first 20 failing fields")
    field_errors: int | None = Field(None, description="validation errors: how many fields failed in all")


class ErrorBody(BaseModel):
    """Every error the service answers (service.errors)."""

    error: ErrorDetail
