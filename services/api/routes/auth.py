"""Login, refresh (rotating), logout and who-am-I."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from services.api import audit
from services.api.deps import Res, client_of, require
from services.api.security.login import check_password
from services.api.security.principal import Principal
from services.api.security.ratelimit import refresh_limit
from services.api.security.tokens import account_version
from shared.errors import Conflict, Forbidden, Unauthorized

router = APIRouter(prefix="/auth", tags=["auth"])


class Login(BaseModel):
    username: str = Field(min_length=1, max_length=64, examples=["ana"])
    password: str = Field(min_length=1, max_length=1024, examples=["correct horse battery"])


class Refresh(BaseModel):
    refresh_token: str = Field(min_length=1, max_length=4096)


class TokenOut(BaseModel):
    access_token: str
    refresh_token: str
    token_type: str = "bearer"
    expires_in: int = Field(description="Seconds the access token is valid", examples=[900])


class Me(BaseModel):
    kind: str = Field(examples=["user"])
    id: int
    name: str = Field(examples=["ana"])
    role: str = Field(examples=["operator"])
    device_id: str | None = None


@router.post("/login", response_model=TokenOut, summary="Log in with a password",
             description="Failed logins are limited per client, per account from that "
                         "client and per account from anywhere; over a limit every try is "
                         "429 with Retry-After, the right password too.",
             responses={401: {}})
async def login(body: Login, request: Request, res: Res) -> TokenOut:
    client = client_of(request)
    row = await check_password(res, body.username, body.password, client, via=None)
    async with res.pool.acquire() as conn, conn.transaction():
        pair, _ = await res.tokens.issue(conn, row["id"], body.username, row["role"],
                                         account_version(row["updated_at"]))
        await audit.record(conn, f"user:{body.username}", "auth.login", body.username,
                           client=client)
    return TokenOut(access_token=pair.access_token, refresh_token=pair.refresh_token,
                    expires_in=pair.expires_in)


@router.post("/refresh", response_model=TokenOut, summary="Swap a refresh token for a new pair",
             description="The refresh token is single-use: it is revoked and replaced. "
                         "Presenting a used one again revokes every token of that login; "
                         "within a few seconds of its use (two tabs, a retry) it is 409 "
                         "instead, and the new pair stays valid.",
             responses={401: {}, 409: {}})
async def refresh(body: Refresh, request: Request, res: Res) -> TokenOut:
    client = client_of(request)
    # Failures are limited per client as API keys are, so that no one can write audit
    # rows without end by sending bad tokens.
    held = await res.limiter.reserve(refresh_limit(res.settings, client))
    try:
        async with res.pool.acquire() as conn:
            try:
                pair, _ = await res.tokens.rotate(conn, body.refresh_token, client)
            except (Unauthorized, Conflict) as exc:
                await audit.record(conn, f"client:{client}", "auth.refresh",
                                   str(exc.data.get("user_id") or ""), "failure",
                                   reason=exc.message)
                raise
    except (Unauthorized, Conflict):
        raise  # a failure: its place stays taken
    except Exception:
        await res.limiter.release(held)  # no verdict (the database failed)
        raise
    await res.limiter.release(held)
    return TokenOut(access_token=pair.access_token, refresh_token=pair.refresh_token,
                    expires_in=pair.expires_in)


@router.post("/logout", status_code=204, summary="Revoke a refresh token and its login",
             responses={401: {}})
async def logout(body: Refresh, request: Request, res: Res,
                 who: Annotated[Principal, Depends(require("self"))]) -> None:
    claims = res.tokens.decode(body.refresh_token, "refresh")
    if who.kind != "user" or int(claims["sub"]) != who.id:
        raise Forbidden("that refresh token is not yours")
    async with res.pool.acquire() as conn, conn.transaction():
        await res.tokens.revoke(conn, claims)
        await audit.record(conn, who.actor, "auth.logout", who.name,
                           client=client_of(request))


@router.get("/me", response_model=Me, summary="Who is calling")
async def me(who: Annotated[Principal, Depends(require("self"))]) -> Me:
    return Me(kind=who.kind, id=who.id, name=who.name, role=who.role, device_id=who.device_id)
