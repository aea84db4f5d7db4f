# cython: language_level=3, boundscheck=False, wraparound=False
"""The floor: the least a compiled event bus with a seq, a tuple record, a
preallocated ring and a per-kind handler table does per event. No payload
copy, no validation, no error policy: a reference, not a library."""


cdef class FloorBus:
    cdef Py_ssize_t _size
    cdef Py_ssize_t _next
    cdef long long _seq
    cdef long long _tick
    cdef long long _day
    cdef list _ring
    cdef list _pending
    cdef dict _routes

    def __init__(self, Py_ssize_t max_events=50000):
        self._size = max_events
        self._next = 0
        self._seq = 0
        self._tick = 0
        self._day = 0
        self._ring = [None] * max_events
        self._pending = []
        self._routes = {}

    def set_clock(self, long long tick, long long day):
        self._tick = tick
        self._day = day

    def subscribe(self, handler, kinds):
        for kind in kinds:
            self._routes[kind] = self._routes.get(kind, ()) + (handler,)

    def publish(self, str kind, payload=None):
        self._seq += 1
        record = (self._seq, self._tick, self._day, kind, None, None, None, None, payload, ())
        self._ring[self._next] = record
        self._next += 1
        if self._next == self._size:
            self._next = 0
        self._pending.append(record)
        return self._seq

    def drain(self):
        cdef list pending = self._pending
        cdef dict routes = self._routes
        cdef tuple record
        cdef tuple route
        self._pending = []
        for record in pending:
            route = routes.get(record[3], ())
            for handler in route:
                handler(record)
        return len(pending)

    def __len__(self):
        return min(self._seq, self._size)
