"""Field types shared by request schemas: bounded so that no accepted value can overflow a column."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StrictInt

# 10^14 fen is a trillion yuan: far above any programme, far below a BIGINT's limit.
MAX_FEN = 10**14
MAX_COUNT = 10**9

Fen = Annotated[StrictInt, Field(ge=0, le=MAX_FEN)]
PositiveFen = Annotated[StrictInt, Field(gt=0, le=MAX_FEN)]
Count = Annotated[StrictInt, Field(ge=0, le=MAX_COUNT)]
