"""The API routers: one `APIRouter` per resource (FastAPI's bigger-applications layout)."""
