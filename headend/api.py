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
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from agent.tokens import mqtt as tokens_mqtt

from . import batch, check_meter_id, figures, format_amount, parse_amount, settlement
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


async def _raw(request):
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise ApiError(413, "too_large", "body", "the body is above %d bytes" % MAX_BODY)
    return raw


def _json_object(raw, field):
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        data = None
    if not isinstance(data, dict):
        raise ApiError(400, "bad_json", field, "%s must be a JSON object" % field)
    return data


async def _body(request, allowed, required):
    data = _json_object(await _raw(request), "body")
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


def _dates(request):
    """``from`` and ``to`` query dates (ISO, inclusive) as local day numbers (None when absent)."""
    out = []
    for name in ("from", "to"):
        text = request.query_params.get(name)
        try:
            out.append(None if text is None else settlement.day_of(text))
        except ValueError as e:
            raise ApiError(400, "bad_date", name, str(e))
    if None not in out and out[0] > out[1]:
        raise ApiError(400, "bad_date", "from", "must not be after to")
    return out


def _command(name, args):
    """``(name, args)`` checked by the meter core's rules (``headend.batch.check_command``)."""
    if not isinstance(args, dict):
        raise ApiError(400, "bad_args", "args", "must be a JSON object of the command's arguments")
    if not isinstance(name, str):
        raise ApiError(400, "bad_command", "name", "must be a command name")
    problem = batch.check_command(name, args)
    if problem is not None:
        raise ApiError(400, "bad_command", "name" if "unknown command" in problem else "args", problem)
    return name, args


def batch_view(view):
    """The JSON of a batch (``headend.batches.Batches.view``): each meter's delivery and result."""
    meters = []
    for line, row in view["meters"]:
        result = row["code"] if row["status"] in ("applied", "refused") else (
            "pending" if row["status"] in OPEN else row["status"])
        meters.append(dict(delivery_view(row), line=line, result=result))
    return dict(view, meters=meters)


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
        what = _command(data["name"], data.get("args", {}))
        key = _key(data, False)
        return await self._deliver(self.service.command, meter, what, key, "api:" + role)

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

    async def bills(self, request):
        """GET /api/v1/meters/{meter_id}/bills?from=&to=[&format=csv]: settled days and monthly statements."""
        self.role(request, "read")
        meter = _meter(request)
        first, last = _dates(request)
        fmt = request.query_params.get("format", "json")
        if fmt not in ("json", "csv"):
            raise ApiError(400, "bad_format", "format", "must be json or csv, got %r" % fmt)
        bills = await run_in_threadpool(self.service.settlement.bills, meter, first, last)
        if fmt == "csv":
            days = await run_in_threadpool(self.service.settlement.days, meter, first, last)
            return Response(settlement.csv_text(meter, days), media_type="text/csv",
                            headers={"Content-Disposition": 'attachment; filename="bills-%s.csv"' % meter})
        return JSONResponse(bills)

    async def figures(self, request):
        """GET /api/v1/figures?from=&to=: the operators' figures (dates default to today, UTC)."""
        self.role(request, "read")
        first, last = _dates(request)
        today = settlement.day_of(time.strftime("%Y-%m-%d", time.gmtime()))
        if first is None:
            first = today if last is None else min(today, last)
        last = max(first, today) if last is None else last
        out = await run_in_threadpool(figures.figures, self.service, settlement.date_of(first),
                                      settlement.date_of(last), int(time.time()))
        return JSONResponse(out)

    async def create_batch(self, request):
        """POST /api/v1/batches: JSON {"meters", "command", "args"}, or a CSV body with ?command=&args=."""
        role = self.role(request, "command")
        raw = await _raw(request)
        if request.headers.get("content-type", "").split(";")[0].strip() == "text/csv":
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise ApiError(400, "bad_csv", "body", "the CSV must be UTF-8 text")
            for key in request.query_params:
                if key not in ("command", "args"):
                    raise ApiError(400, "unknown_field", key, "unknown parameter %r (known: command, args)" % key)
            name = request.query_params.get("command")
            if name is None:
                raise ApiError(400, "missing_field", "command", "command is required (?command=NAME)")
            args = _json_object(request.query_params.get("args", "{}").encode(), "args")
            try:
                rows = batch.plan(text)
            except ValueError as e:
                raise ApiError(400, "bad_meters", "body", str(e))
        else:
            data = _json_object(raw, "body")
            for key in data:
                if key not in ("meters", "command", "args"):
                    raise ApiError(400, "unknown_field", key, "unknown field %r (known: meters, command, args)" % key)
            for key in ("meters", "command"):
                if key not in data:
                    raise ApiError(400, "missing_field", key, "%s is required" % key)
            name, args = data["command"], data.get("args", {})
            if not isinstance(data["meters"], list):
                raise ApiError(400, "bad_meters", "meters", "must be a list of meter ids")
            try:
                rows = batch.check_ids(list(enumerate(data["meters"], 1)))
            except ValueError as e:
                raise ApiError(400, "bad_meters", "meters", str(e).replace("line", "item"))
        name, args = _command(name, args)
        batch_id = await run_in_threadpool(self.service.batch, rows, name, args, "api:" + role)
        view = await run_in_threadpool(self.service.batches.view, batch_id)
        return JSONResponse(batch_view(view), status_code=202)

    async def get_batch(self, request):
        """GET /api/v1/batches/{batch_id}: progress and per-meter results."""
        self.role(request, "read")
        text = request.path_params["batch_id"]
        view = None
        if text.isdigit() and text.isascii() and len(text) < 19:
            view = await run_in_threadpool(self.service.batches.view, int(text))
        if view is None:
            raise ApiError(404, "unknown_batch", "batch_id", "no batch %r" % text)
        return JSONResponse(batch_view(view))

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
        Route(m + "/bills", api.bills, methods=["GET"]),
        Route("/api/v1/figures", api.figures, methods=["GET"]),
        Route("/api/v1/batches", api.create_batch, methods=["POST"]),
        Route("/api/v1/batches/{batch_id}", api.get_batch, methods=["GET"]),
    ], exception_handlers={ApiError: api_error, HTTPException: http_error})


_ERR = {"description": "refused", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
_DELIVERY = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Delivery"}}}}
_METER = {"name": "meter_id", "in": "path", "required": True, "schema": {"type": "string", "pattern": "^[0-9]{12}$"}}


_DATES = [{"name": n, "in": "query", "schema": {"type": "string", "format": "date"},
           "description": "ISO date, inclusive"} for n in ("from", "to")]


def _op(summary, role, ok, body=None, params=(), meter=True):
    op = {"summary": summary, "description": "Roles: %s." % role,
          "parameters": ([_METER] if meter else []) + list(params),
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
        "/api/v1/meters/{meter_id}/bills": {"get": _op(
            "Settled days (energy per rate, charge, credits, opening and closing balance, each checked exactly"
            " against the meter's own cumulative charge), monthly statements and mismatches; CSV with format=csv",
            "read, operator", {"200": {"description": "bills", "content": {
                "application/json": {"schema": {"type": "object", "properties": {
                    "days": {"type": "array"}, "months": {"type": "array"}, "problems": {"type": "array"}}}},
                "text/csv": {"schema": {"type": "string"}}}}},
            params=_DATES + [{"name": "format", "in": "query", "schema": {"enum": ["json", "csv"]}}])},
        "/api/v1/figures": {"get": _op(
            "Operators' figures: remote cut/reconnect success per day, top-up to restore latency, meters offline,"
            " pending deliveries, failing notifications, theft suspects (dates default to today, UTC)",
            "read, operator", {"200": {"description": "figures"}}, params=_DATES, meter=False)},
        "/api/v1/batches": {"post": dict(_op(
            "One command to many meters through the delivery queue (checked as pmeter batch checks); a JSON body,"
            " or a CSV body (text/csv, as pmeter batch reads) with ?command=NAME&args=JSON",
            "operator", {"202": {"description": "the batch, as GET /api/v1/batches/{batch_id}"}}, meter=False,
            params=[{"name": "command", "in": "query", "schema": {"type": "string"}},
                    {"name": "args", "in": "query", "schema": {"type": "string"}}]),
            requestBody={"required": True, "content": {
                "application/json": {"schema": {"type": "object", "required": ["meters", "command"],
                                                "additionalProperties": False, "properties": {
                                                    "meters": {"type": "array", "items": {"type": "string"}},
                                                    "command": {"type": "string"}, "args": {"type": "object"}}}},
                "text/csv": {"schema": {"type": "string"}}}})},
        "/api/v1/batches/{batch_id}": {"get": _op(
            "A batch's progress (deliveries by status) and each meter's delivery and result", "read, operator",
            {"200": {"description": "the batch"}}, meter=False,
            params=[{"name": "batch_id", "in": "path", "required": True, "schema": {"type": "integer"}}])},
    },
}
