"""Request and response schemas of consumer login, claims and vouchers."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class OtpIn(Strict):
    phone: StrictStr = Field(min_length=1, max_length=32, description="Mainland mobile, optionally with +86.")


class OtpOut(BaseModel):
    sent: bool
    expires_in: int = Field(description="Seconds until the code expires.")


class SessionIn(Strict):
    phone: StrictStr = Field(min_length=1, max_length=32)
    code: StrictStr = Field(pattern=r"^[0-9]{6}$", description="The 6-digit code sent by SMS.")


class SessionOut(BaseModel):
    token: str
    expires_at: str


class ClaimIn(Strict):
    tier: StrictStr = Field(min_length=1, max_length=32)
    holder_ref: StrictStr | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        description="Platform merchants only (required for them): the platform's own user id.",
    )
    holder_phone: StrictStr | None = Field(
        default=None,
        min_length=1,
        max_length=32,
        description="Platform merchants only: the user's verified mobile, so limits count across channels.",
    )
    device_key: DeviceKeyIn | None = Field(
        default=None,
        description="The holder's device public key (CONTRACT §10): the VC1 is then bound to it (its cnf "
        "claim) and redeems only as a live VP1 presentation. Required by holder_binding: required "
        "programmes; ignored by holder_binding: off ones.",
    )


class DeviceKeyIn(BaseModel):
    """A device's public key as WebCrypto exports it (JWK); members other than these are ignored."""

    model_config = ConfigDict(extra="ignore", strict=True)
    kty: Literal["EC"]
    crv: Literal["P-256"]
    x: StrictStr = Field(pattern=r"^[A-Za-z0-9_-]{43}$")
    y: StrictStr = Field(pattern=r"^[A-Za-z0-9_-]{43}$")


class RebindIn(Strict):
    device_key: DeviceKeyIn


class RebindOut(BaseModel):
    voucher_id: str
    token: str
    thumbprint: str = Field(description="RFC 9679 COSE Key thumbprint (hex) of the new device key.")


class ClaimOut(BaseModel):
    voucher_id: str
    program_id: str
    tier: str
    face_value_fen: int
    min_spend_fen: int
    valid_from: str
    expires_at: str
    token: str
    qr_png_url: str
    qr_svg_url: str


class VoucherOut(BaseModel):
    voucher_id: str
    program_id: str
    tier: str
    face_value_fen: int
    min_spend_fen: int
    status: Literal["issued", "redeemed", "expired", "void"]
    valid_from: str | None
    expires_at: str | None
    token: str | None
    qr_png_url: str
    qr_svg_url: str


class VoucherList(BaseModel):
    vouchers: list[VoucherOut]


class Jwk(BaseModel):
    kty: str
    crv: str
    x: str
    y: str
    kid: str
    alg: str
    use: str
    nbf: int | None = None
    exp: int | None = None
    status: Literal["next", "active", "retired"]


class Jwks(BaseModel):
    keys: list[Jwk]
