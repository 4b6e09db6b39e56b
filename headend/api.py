"""The service's HTTP API: JSON over Starlette (served by uvicorn, headend/service.py).

Every request but the OpenAPI description needs ``Authorization: Bearer
TOKEN`` with a token of the config's ``[api]`` section; its role decides
what it may do (``ROLES``).  Every refusal is a JSON body
``{"error": {"code", "field", "message"}}`` with a 4xx status.  Money is
text with 4 decimals ("50.0000") and its integer in 1/10000 CNY.
"""

import hmac
import json
import time

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.routing import Route

from agent.tokens import mqtt as tokens_mqtt

from . import batch, check_meter_id, format_amount, parse_amount
from .delivery import FINAL, OPEN, Conflict

# role -> what it may do
ROLES = {"payment": ("topup",), "operator": ("topup", "command", "read"), "read": ("read",)}
MAX_BODY = 65536
MAX_EVENTS = 1000


class ApiError(Exception):
    """A refusal: HTTP ``status``, a stable ``code``, the ``field`` at fault and a message."""

    def __init__(self, status, code, field, message):
        Exception.__init__(self, message)
        self.status, self.code, self.field, self.message = status, code, field, message


def _error(status, code, field, message):
    return JSONResponse({"error": {"code": code, "field": field, "message": message}}, status_code=status)


def _money(minor):
    return format_amount(minor) if isinstance(minor, int) and not isinstance(minor, bool) else None


def _age(now, t):
    return max(0, now - t) if isinstance(t, int) and not isinstance(t, bool) else None


def _meter(request):
    meter = request.path_params["meter_id"]
    try:
        return check_meter_id(meter)
    except ValueError as e:
        raise ApiError(400, "bad_meter_id", "meter_id", str(e))


async def _body(request, allowed, required):
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise ApiError(413, "too_large", "body", "the body is above %d bytes" % MAX_BODY)
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ApiError(400, "bad_json", "body", "the body must be a JSON object")
    if not isinstance(data, dict):
        raise ApiError(400, "bad_json", "body", "the body must be a JSON object")
    for key in data:
        if key not in allowed:
            raise ApiError(400, "unknown_field", key, "unknown field %r (known: %s)" % (key, ", ".join(allowed)))
    for key in required:
        if key not in data:
            raise ApiError(400, "missing_field", key, "%s is required" % key)
    return data


def _amount(value, low):
    if not isinstance(value, str):
        raise ApiError(400, "bad_amount", "amount", "must be a string like \"50.00\" (no floats for money)")
    try:
        amount = parse_amount(value)
    except ValueError as e:
        raise ApiError(400, "bad_amount", "amount", str(e))
    if not low <= amount <= tokens_mqtt.MAX_AMOUNT:
        raise ApiError(400, "bad_amount", "amount", "must be %s and at most %s"
                       % ("above 0" if low else "0 or more", format_amount(tokens_mqtt.MAX_AMOUNT)))
    return amount


def _key(data, required):
    key = data.get("idempotency_key")
    if key is None and not required:
        return None
    if not isinstance(key, str) or not 1 <= len(key) <= 200 or not key.isprintable() or not key.isascii():
        raise ApiError(400, "bad_idempotency_key", "idempotency_key", "must be 1-200 printable ASCII characters")
    return key


def delivery_view(row, replayed=None):
    """The JSON of a delivery row."""
    out = {"delivery_id": row["id"], "meter_id": row["meter"], "ref": row["ref"], "kind": row["kind"],
           "status": row["status"], "code": row["code"], "balance": _money(row["balance"]),
           "balance_minor": row["balance"], "sends": row["sends"], "created": row["created"],
           "expires": row["expires"], "idempotency_key": row["idempotency_key"]}
    if row["kind"] == "topup":
        out.update(amount=_money(row["amount"]), amount_minor=row["amount"])
    else:
        out["command"] = row["command"]
    if replayed is not None:
        out["replayed"] = replayed
    return out


class Api:
    """The routes, over a running ``headend.service.Service`` and the ``[api]`` tokens."""

    def __init__(self, service, tokens, wait_s):
        self.service = service
        self.tokens = tokens  # role -> [token]
        self.wait_s = wait_s

    def role(self, request, need):
        """The caller's role if it may do ``need``; ApiError 401/403 otherwise."""
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise ApiError(401, "unauthorized", "Authorization", "send Authorization: Bearer TOKEN")
        found = None
        for role, tokens in self.tokens.items():
            for t in tokens:
                if hmac.compare_digest(t.encode(), token.strip().encode()):
                    found = role
        if found is None:
            raise ApiError(401, "unauthorized", "Authorization", "unknown token")
        if need not in ROLES[found]:
            raise ApiError(403, "forbidden", "Authorization", "the %s role may not do this (%s)" % (found, need))
        return found

    async def topup(self, request):
        """POST /api/v1/meters/{meter_id}/topups."""
        role = self.role(request, "topup")
        meter = _meter(request)
        data = await _body(request, ("amount", "idempotency_key"), ("amount", "idempotency_key"))
        amount = _amount(data["amount"], 1)
        key = _key(data, True)
        return await self._deliver(self.service.topup, meter, amount, key, "api:" + role)

    async def command(self, request):
        """POST /api/v1/meters/{meter_id}/commands."""
        role = self.role(request, "command")
        meter = _meter(request)
        data = await _body(request, ("name", "args", "idempotency_key"), ("name",))
        name, args = data["name"], data.get("args", {})
        if not isinstance(args, dict):
            raise ApiError(400, "bad_args", "args", "must be a JSON object of the command's arguments")
        if not isinstance(name, str):
            raise ApiError(400, "bad_command", "name", "must be a command name")
        problem = batch.check_command(name, args)
        if problem is not None:
            raise ApiError(400, "bad_command", "name" if "unknown command" in problem else "args", problem)
        key = _key(data, False)
        return await self._deliver(self.service.command, meter, (name, args), key, "api:" + role)

    async def warning(self, request):
        """PUT /api/v1/meters/{meter_id}/warning: the customer's warning amount (alarm 1), as set_limits."""
        role = self.role(request, "command")
        meter = _meter(request)
        data = await _body(request, ("amount", "idempotency_key"), ("amount",))
        amount = _amount(data["amount"], 0)
        return await self._deliver(self.service.command, meter, ("set_limits", {"alarm1": amount}),
                                   _key(data, False), "api:" + role)

    async def _deliver(self, issue, meter, what, key, source):
        try:
            row, replayed = await run_in_threadpool(issue, meter, what, key, source, self.wait_s)
        except Conflict as e:
            raise ApiError(409, "idempotency_conflict", "idempotency_key", str(e))
        return JSONResponse(delivery_view(row, replayed), status_code=200 if row["status"] in FINAL else 202)

    async def meter(self, request):
        """GET /api/v1/meters/{meter_id}: the shadow, each value with its age."""
        self.role(request, "read")
        meter = _meter(request)
        return JSONResponse(await run_in_threadpool(self._meter_view, meter))

    def _meter_view(self, meter):
        shadow = self.service.shadow
        rows = shadow.meters(meter)
        if not rows:
            raise ApiError(404, "unknown_meter", "meter_id", "nothing received from meter %s yet" % meter)
        row = rows[0]
        now = int(time.time())
        state = row["state"] or {}

        def value(v, t):
            return {"value": v, "at": t, "age_s": _age(now, t)}

        rec = shadow.reconcile(meter, now)
        return {
            "meter_id": meter,
            "online": row["status"] == "online",
            "status": value(row["status"], row["status_t"]),
            "balance": dict(value(_money(state.get("bal")), row["state_t"]), minor=state.get("bal")),
            "relay": value(state.get("relay"), row["state_t"]),
            "energy_wh": value(state.get("wh"), row["state_t"]),
            "telemetry": value(row["tele"], row["tele_t"]),
            "last_seen": value(None, row["seen"]),
            "lost_since": row["lost_since"],
            "pending_deliveries": [delivery_view(r) for r in self.service.queue.items(meter, OPEN)],
            "problems": rec["problems"],
        }

    async def events(self, request):
        """GET /api/v1/meters/{meter_id}/events?limit=N: newest first."""
        self.role(request, "read")
        meter = _meter(request)
        text = request.query_params.get("limit", "100")
        if not text.isdigit() or not text.isascii() or not 1 <= int(text) <= MAX_EVENTS:
            raise ApiError(400, "bad_limit", "limit", "must be a whole number 1-%d" % MAX_EVENTS)
        rows = await run_in_threadpool(self.service.shadow.events, meter, int(text))
        return JSONResponse({"meter_id": meter, "events": rows})

    async def deliveries(self, request):
        """GET /api/v1/meters/{meter_id}/deliveries: every queued top-up and command of the meter."""
        self.role(request, "read")
        meter = _meter(request)
        rows = await run_in_threadpool(self.service.queue.items, meter)
        return JSONResponse({"meter_id": meter, "deliveries": [delivery_view(r) for r in rows]})

    async def openapi(self, request):
        """GET /api/v1/openapi.json (no token needed)."""
        return JSONResponse(OPENAPI)


def app(service, tokens, wait_s):
    """The Starlette application of the API."""
    api = Api(service, tokens, wait_s)

    async def api_error(request, exc):
        return _error(exc.status, exc.code, exc.field, exc.message)

    async def http_error(request, exc):
        field = "method" if exc.status_code == 405 else "path"
        return _error(exc.status_code, "not_found" if exc.status_code == 404 else "http_%d" % exc.status_code,
                      field, "%s %s: %s" % (request.method, request.url.path, exc.detail))

    m = "/api/v1/meters/{meter_id}"
    return Starlette(routes=[
        Route("/api/v1/openapi.json", api.openapi, methods=["GET"]),
        Route(m, api.meter, methods=["GET"]),
        Route(m + "/events", api.events, methods=["GET"]),
        Route(m + "/deliveries", api.deliveries, methods=["GET"]),
        Route(m + "/topups", api.topup, methods=["POST"]),
        Route(m + "/commands", api.command, methods=["POST"]),
        Route(m + "/warning", api.warning, methods=["PUT"]),
    ], exception_handlers={ApiError: api_error, HTTPException: http_error})


_ERR = {"description": "refused", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
_DELIVERY = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Delivery"}}}}
_METER = {"name": "meter_id", "in": "path", "required": True, "schema": {"type": "string", "pattern": "^[0-9]{12}$"}}


def _op(summary, role, ok, body=None, params=()):
    op = {"summary": summary, "description": "Roles: %s." % role, "parameters": [_METER] + list(params),
          "security": [{"bearer": []}],
          "responses": dict(ok, **{"400": _ERR, "401": _ERR, "403": _ERR, "404": _ERR, "409": _ERR})}
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    return op


OPENAPI = {
    "openapi": "3.1.0",
    "info": {"title": "pmeter head-end", "version": "1"},
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "Error": {"type": "object", "properties": {"error": {"type": "object", "properties": {
                "code": {"type": "string"}, "field": {"type": "string"}, "message": {"type": "string"}}}}},
            "Delivery": {"type": "object", "properties": {
                "delivery_id": {"type": "integer"}, "meter_id": {"type": "string"}, "ref": {"type": "string"},
                "kind": {"enum": ["topup", "command"]}, "amount": {"type": "string"},
                "amount_minor": {"type": "integer"}, "command": {"type": "string"},
                "status": {"enum": ["queued", "sent", "applied", "refused", "expired"]},
                "code": {"type": ["string", "null"], "description": "the meter's answer (accepted, or why not)"},
                "balance": {"type": ["string", "null"]}, "balance_minor": {"type": ["integer", "null"]},
                "sends": {"type": "integer"}, "idempotency_key": {"type": ["string", "null"]},
                "replayed": {"type": "boolean", "description": "true: this idempotency key was served before"}}},
        },
    },
    "paths": {
        "/api/v1/meters/{meter_id}/topups": {"post": _op(
            "Vend a top-up, deliver it, wait for the meter's answer (200 final, 202 still queued or sent)",
            "payment, operator", {"200": _DELIVERY, "202": _DELIVERY},
            {"type": "object", "required": ["amount", "idempotency_key"], "additionalProperties": False,
             "properties": {"amount": {"type": "string", "example": "50.00"},
                            "idempotency_key": {"type": "string", "maxLength": 200}}})},
        "/api/v1/meters/{meter_id}/commands": {"post": _op(
            "Issue a management command, deliver it, wait for the answer", "operator",
            {"200": _DELIVERY, "202": _DELIVERY},
            {"type": "object", "required": ["name"], "additionalProperties": False,
             "properties": {"name": {"type": "string", "example": "set_limits"}, "args": {"type": "object"},
                            "idempotency_key": {"type": "string"}}})},
        "/api/v1/meters/{meter_id}/warning": {"put": _op(
            "Set the customer's warning amount (alarm 1): a set_limits command to the meter", "operator",
            {"200": _DELIVERY, "202": _DELIVERY},
            {"type": "object", "required": ["amount"], "additionalProperties": False,
             "properties": {"amount": {"type": "string", "example": "30.00"}, "idempotency_key": {"type": "string"}}})},
        "/api/v1/meters/{meter_id}": {"get": _op(
            "The meter's shadow: status, balance, relay, energy, telemetry, each with its age; open deliveries",
            "read, operator", {"200": {"description": "the shadow"}})},
        "/api/v1/meters/{meter_id}/events": {"get": _op(
            "The meter's events and acks, newest first", "read, operator", {"200": {"description": "events"}},
            params=[{"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1,
                                                                  "maximum": MAX_EVENTS}}])},
        "/api/v1/meters/{meter_id}/deliveries": {"get": _op(
            "Every queued top-up and command of the meter with its status", "read, operator",
            {"200": {"description": "deliveries"}})},
    },
}
