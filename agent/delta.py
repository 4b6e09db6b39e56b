"""Checkpoint deltas: ``diff(old, new)`` -> operations, ``patch(value, ops)``.

Own module (not in agent/store.py) so that a board compiling the agent
from source never holds both parse trees at once.  Runs on MicroPython.
"""


def _eq(a, b):
    """Deep equality that tells True from 1 (their encodings differ)."""
    ta = type(a)
    if ta is not type(b):
        if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
            ta = list
        else:
            return False
    if isinstance(a, (list, tuple)):
        if len(a) != len(b):
            return False
        for i in range(len(a)):
            if not _eq(a[i], b[i]):
                return False
        return True
    if ta is dict:
        if len(a) != len(b):
            return False
        for k in a:
            if k not in b or not _eq(a[k], b[k]):
                return False
        return True
    return a == b


MAX_SHIFT = 8


def _diff(a, b, path, ops):
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        n = len(b)
        m = len(a)
        if m == n and (n == 0 or _eq(a[0], b[0])):
            for i in range(n):
                _diff(a[i], b[i], path + [i], ops)
            return
        # Newest-first histories grow at the front and drop the oldest:
        # [new..., old[0], old[1], ...]
        k = 1
        while k <= MAX_SHIFT and k < n:
            if n - k <= m and _eq(b[k:], a[: n - k]):
                ops.append(["splice", path, 0, 0, list(b[:k]), n])
                return
            k += 1
        # Sorted sets and logs grow in the middle or at the end: keep the
        # common prefix and suffix, replace what lies between.
        p = 0
        while p < m and p < n and _eq(a[p], b[p]):
            p += 1
        q = 0
        while q < m - p and q < n - p and _eq(a[m - 1 - q], b[n - 1 - q]):
            q += 1
        if m != n and p + q > 0 and n - p - q <= MAX_SHIFT:
            ops.append(["splice", path, p, m - q, list(b[p : n - q]), n])
            return
        if m == n:
            for i in range(n):
                _diff(a[i], b[i], path + [i], ops)
            return
        ops.append(["set", path, b])
        return
    if isinstance(a, dict) and isinstance(b, dict):
        if len(a) == len(b) and all(k in b for k in a):
            for k in sorted(a):
                _diff(a[k], b[k], path + [k], ops)
            return
        ops.append(["set", path, b])
        return
    if not _eq(a, b):
        ops.append(["set", path, b])


def diff(old, new):
    """Operations turning ``old`` into ``new`` (see ``patch``)."""
    ops = []
    _diff(old, new, [], ops)
    return ops


def patch(value, ops):
    """Apply ``diff`` operations to ``value`` (modified in place); returns the result.

    Operations: ["set", path, value] and ["splice", path, start, end,
    items, length] (list = old[:start] + items + old[end:], first
    ``length`` items).

    Raises ValueError if an operation does not fit the value.
    """
    try:
        for op in ops:
            kind, path, arg = op[0], op[1], op[2]
            if kind == "set":
                new = arg
            elif kind == "splice":
                # old[:start] + items + old[end:], cut to ``length`` items
                old = _get(value, path)
                start, end, items, length = arg, op[3], op[4], op[5]
                if not isinstance(old, list) or not isinstance(items, list):
                    raise ValueError("splice on a non-list")
                for x in (start, end, length):
                    if not isinstance(x, int) or isinstance(x, bool):
                        raise ValueError("splice bounds must be integers")
                if not 0 <= start <= end <= len(old):
                    raise ValueError("splice %d:%d outside a list of %d" % (start, end, len(old)))
                new = old[:start] + items + old[end:]
                if not 0 <= length <= len(new):
                    raise ValueError("splice length %d of %d items" % (length, len(new)))
                new = new[:length]
            else:
                raise ValueError("unknown operation %r" % (kind,))
            if not path:
                value = new
            else:
                parent = _get(value, path[:-1])
                key = path[-1]
                if isinstance(parent, list):
                    if not isinstance(key, int) or isinstance(key, bool) or not 0 <= key < len(parent):
                        raise ValueError("index %r out of range" % (key,))
                elif not isinstance(parent, dict) or key not in parent:
                    raise ValueError("key %r not found" % (key,))
                parent[key] = new
    except (ValueError, MemoryError):
        raise
    except Exception as e:  # IndexError, TypeError, KeyError from a damaged delta
        raise ValueError("delta does not fit: %r" % (e,))
    return value


def _get(value, path):
    for key in path:
        if isinstance(value, list):
            if not isinstance(key, int) or isinstance(key, bool) or not 0 <= key < len(value):
                raise ValueError("index %r out of range" % (key,))
        elif not isinstance(value, dict) or key not in value:
            raise ValueError("key %r not found" % (key,))
        value = value[key]
    return value
