# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, embedsignature=True, embedsignature.format=clinic
# cython: binding=False
"""Compiled core of ringbus: the ring, the seq counter, the pending queue and
the drain loop, plus the ``WorldEvent`` record.

It matches the pure-Python twin ``ringbus._ringbus_py`` name for name,
result for result, exception for exception and message for message; read
that module for the behaviour. What differs is storage: the ring keeps each
event's fields in preallocated C arrays (payload pairs inline), so publishing
allocates nothing; a ``WorldEvent`` is built only when a subscriber or a
reader asks for it.
"""

cimport cython
from cpython.object cimport PyObject
from libc.math cimport isfinite
from libc.string cimport memcpy, memset
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.long cimport PyLong_AsLongLongAndOverflow
from cpython.unicode cimport PyUnicode_CompareWithASCIIString, PyUnicode_GET_LENGTH
from cpython.dict cimport PyDict_Next, PyDict_SetItem
from cpython.tuple cimport PyTuple_New
from cpython.pythread cimport PyThread_get_thread_ident

from collections import deque
from inspect import isawaitable as _isawaitable

from ringbus._errors import (
    CascadeLimitError,
    PendingOverflowError,
    ProducerClosedError,
    RingFullError,
    WrongThreadError,
    cascade_limit_message,
    clock_back_message,
    event_before_clock_message,
    handler_errors_message,
    inbox_refused_note,
    pending_overflow_message,
    producer_closed_message,
    refuse_awaitable,
    ring_full_message,
    wrong_thread_message,
)
from ringbus._limits import ROUTE_CACHE_LIMIT, check_ring_size
from ringbus._normalise import (
    CLOCK_POLICIES,
    DROP_POLICIES,
    FIELDS,
    MAX_PAYLOAD_ITEMS_LIMIT,
    NORMAL,
    URGENT,
    TRUNCATED_KEY,
    check_non_negative,
    check_id,
    check_kind,
    check_lane,
    check_limit,
    check_positive,
    event_args_from_dict,
    jsonify,
    lane_of,
    normalise_payload,
    normalise_tags,
    thaw_value,
)

cdef extern from "Python.h":
    ctypedef struct _TypeObject "PyTypeObject":
        pass
    _TypeObject* _type_of "Py_TYPE"(PyObject* o)
    _TypeObject _str_type "PyUnicode_Type"
    _TypeObject _int_type "PyLong_Type"
    _TypeObject _bool_type "PyBool_Type"
    _TypeObject _float_type "PyFloat_Type"
    PyObject* _none "Py_None"
    double _float_value "PyFloat_AS_DOUBLE"(PyObject* o)
    void _incref "Py_INCREF"(PyObject* o)
    void _xdecref "Py_XDECREF"(PyObject* o)
    void _tuple_set "PyTuple_SET_ITEM"(object tup, Py_ssize_t i, PyObject* o)
    PyObject* _tuple_get "PyTuple_GET_ITEM"(object tup, Py_ssize_t i)
    # Borrowed; NULL with no error set when missing (str keys cannot fail).
    PyObject* _dict_get "PyDict_GetItemWithError"(object d, object key)
    void PyObject_GC_UnTrack(void* op)
    Py_ssize_t _refcount "Py_REFCNT"(object o)
    ctypedef struct _MethodDef "PyMethodDef":
        const char* ml_name
        void* ml_meth
        int ml_flags
        const char* ml_doc
    ctypedef struct _TypeDict "PyTypeObject":
        PyObject* tp_dict
    int METH_FASTCALL
    int METH_KEYWORDS
    object PyDescr_NewMethod(void* cls, _MethodDef* method)
    void PyType_Modified(void* cls)
    Py_ssize_t _tuple_size "PyTuple_GET_SIZE"(PyObject* tup)
    PyObject* _call_one "PyObject_CallOneArg"(PyObject* callable, PyObject* arg)
    int PyErr_ExceptionMatches(PyObject* exc)
    int PyGC_Disable()
    int PyGC_Enable()

cdef extern from *:
    """
    #if defined(__GNUC__) || defined(__clang__)
    #define RINGBUS_PREFETCH_WRITE(p) __builtin_prefetch((p), 1, 1)
    #else
    #define RINGBUS_PREFETCH_WRITE(p) ((void)0)
    #endif
    """
    void RINGBUS_PREFETCH_WRITE(const void* p) noexcept

cdef extern from *:
    """
    /* An int of one digit (30 bits) fits in 64 bits: no need to ask further. */
    #if PY_VERSION_HEX >= 0x030C0000
    #define RINGBUS_INT_COMPACT(o) PyUnstable_Long_IsCompact((PyLongObject*)(o))
    #else
    #define RINGBUS_INT_COMPACT(o) (Py_SIZE(o) >= -1 && Py_SIZE(o) <= 1)
    #endif
    """
    bint RINGBUS_INT_COMPACT(PyObject* o) noexcept

__all__ = ["FIELDS", "DROP_POLICIES", "ROUTE_CACHE_LIMIT", "Producer", "RingCore", "WorldEvent"]


# Per-slot layout: four 64-bit ints in _meta, then object pointers in _objs.
cdef enum:
    M_SEQ = 0
    M_TICK = 1
    M_DAY = 2
    M_NPAIRS = 3
    M_STRIDE = 4
    O_KIND = 0
    O_POLITY = 1
    O_WARD = 2
    O_ACTOR = 3
    O_SUBJECT = 4
    O_TAGS = 5
    O_PAIRS = 6
    MAX_FLAT = 128  # 2 * MAX_PAYLOAD_ITEMS_LIMIT

assert MAX_FLAT == 2 * MAX_PAYLOAD_ITEMS_LIMIT

cdef tuple _EMPTY = ()
cdef str _TRUNCATED = TRUNCATED_KEY
cdef Py_ssize_t _route_cache_limit = ROUTE_CACHE_LIMIT


cdef int _raise_pending() except -1:
    """Let Cython pick up the exception a C API call left set."""
    return -1


cdef inline long long _clock_arg(str name, object value) except -1:
    cdef int overflow = 0
    cdef long long number
    if type(value) is int:
        number = PyLong_AsLongLongAndOverflow(value, &overflow)
        if overflow == 0 and number >= 0:
            return number
    return check_non_negative(name, value)


cdef inline bint _scalar(PyObject* value) noexcept:
    """An exact None, str, bool, finite float or int in the signed 64-bit range."""
    cdef _TypeObject* kind = _type_of(value)
    cdef int overflow = 0
    if value == _none or kind == &_str_type or kind == &_bool_type:
        return True
    if kind == &_int_type:
        if RINGBUS_INT_COMPACT(value):
            return True
        PyLong_AsLongLongAndOverflow(<object>value, &overflow)  # cannot fail on an int
        return overflow == 0
    return kind == &_float_type and isfinite(_float_value(value))


cdef inline bint _reserved(PyObject* key) noexcept:
    """Whether the str ``key`` is the truncation marker's (refused in payloads)."""
    return key == <PyObject*>_TRUNCATED or (
        PyUnicode_GET_LENGTH(<object>key) == 13
        and PyUnicode_CompareWithASCIIString(<object>key, b"__truncated__") == 0
    )


cdef inline void _release(PyObject** buf, Py_ssize_t size) noexcept:
    """Drop the references ``_publish`` took to payload keys and values.

    They are exact str, int, float, bool, None or tuples of them: freeing
    one runs no Python code.
    """
    cdef Py_ssize_t i
    for i in range(size):
        _xdecref(buf[i])


cdef inline bint _scalar_dict(dict payload, PyObject** buf, Py_ssize_t* count) noexcept:
    """Take references to the keys and values of a dict of str keys and scalar
    values, into buf; False (and nothing taken) for any other dict.

    No Python code runs in here: the dict cannot change under the loop.
    """
    cdef Py_ssize_t pos = 0
    cdef Py_ssize_t i
    cdef Py_ssize_t size = len(payload)
    cdef PyObject* key
    cdef PyObject* value
    for i in range(size):  # exactly len() items: no extra call to learn the end
        PyDict_Next(payload, &pos, &key, &value)
        if _type_of(key) != &_str_type or not _scalar(value) or _reserved(key):
            _release(buf, 2 * i)
            return False
        # Owned at once: the caller's code that runs later (its tags
        # iterable, a finalizer) may change or empty the dict.
        _incref(key)
        _incref(value)
        buf[2 * i] = key
        buf[2 * i + 1] = value
    count[0] = size
    return True


cdef inline bint _str_tuple(tuple tags) noexcept:
    cdef Py_ssize_t i
    for i in range(len(tags)):
        if _type_of(_tuple_get(tags, i)) != &_str_type:
            return False
    return True


cdef tuple _pairs_from_flat(tuple flat):
    cdef Py_ssize_t i
    return tuple([(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)])


cdef tuple _flat_from_pairs(tuple pairs):
    cdef list flat = []
    for key, value in pairs:
        flat.append(key)
        flat.append(value)
    return tuple(flat)


@cython.final
@cython.no_gc
@cython.auto_pickle(False)
cdef class _Storage:
    """The ring's preallocated slots.

    Per slot: seq, tick, day and the pair count in ``meta``; kind, the four
    ids, tags and the payload keys and values in ``objs``; and in ``views``
    a borrowed pointer to the event handed out for that slot whose payload
    still lives here (see ``WorldEvent._materialise``). It references only
    payload values, which are atomic or tuples of them, so events that point
    at it can never be part of a reference cycle.
    """

    cdef long long* meta
    cdef PyObject** objs
    cdef PyObject** views
    cdef Py_ssize_t capacity
    cdef Py_ssize_t stride

    def __cinit__(self, Py_ssize_t capacity, Py_ssize_t stride):
        self.capacity = 0
        self.stride = stride
        # Preallocate and touch every page now, so publishing never page-faults.
        self.meta = <long long*>PyMem_Malloc(capacity * M_STRIDE * sizeof(long long))
        self.objs = <PyObject**>PyMem_Malloc(capacity * stride * sizeof(PyObject*))
        self.views = <PyObject**>PyMem_Malloc(capacity * sizeof(PyObject*))
        if self.meta == NULL or self.objs == NULL or self.views == NULL:
            raise MemoryError(f"cannot preallocate a ring of {capacity} events")
        memset(self.meta, 0, capacity * M_STRIDE * sizeof(long long))
        memset(self.objs, 0, capacity * stride * sizeof(PyObject*))
        memset(self.views, 0, capacity * sizeof(PyObject*))
        self.capacity = capacity

    def __dealloc__(self):
        cdef Py_ssize_t slot, i, used
        cdef PyObject** objs
        if self.meta != NULL and self.objs != NULL:
            for slot in range(self.capacity):
                if self.meta[slot * M_STRIDE + M_SEQ] == 0:
                    continue
                objs = self.objs + slot * self.stride
                used = O_PAIRS + 2 * self.meta[slot * M_STRIDE + M_NPAIRS]
                for i in range(used):
                    _xdecref(objs[i])
        PyMem_Free(self.meta)
        PyMem_Free(self.objs)
        PyMem_Free(self.views)

    cdef object flat_copy(self, Py_ssize_t slot, long long seq):
        """A new tuple of the payload keys and values (alternating) of event
        ``seq`` in ``slot``, or None if the slot no longer holds that event.

        Allocating the tuple may run the cyclic GC, and so finalizers that
        publish over this very slot: the slot is read only after it.
        """
        cdef Py_ssize_t size, i
        cdef PyObject** objs
        cdef tuple flat
        if self.meta[slot * M_STRIDE + M_SEQ] != seq:
            return None
        size = 2 * self.meta[slot * M_STRIDE + M_NPAIRS]
        if size == 0:
            return _EMPTY
        flat = PyTuple_New(size)
        # A slot keeps its contents for as long as it keeps its seq.
        if self.meta[slot * M_STRIDE + M_SEQ] != seq:
            return None
        objs = self.objs + slot * self.stride + O_PAIRS
        for i in range(size):
            _incref(objs[i])
            _tuple_set(flat, i, objs[i])
        # Payload values are atomic or tuples of them: no cycles possible.
        PyObject_GC_UnTrack(<void*>flat)
        return flat


@cython.freelist(256)
@cython.no_gc
@cython.auto_pickle(False)
cdef class WorldEvent:
    """One immutable fact of the simulated world.

    Parameters
    ----------
    seq
        Sequence number assigned by the bus (starts at 1, never reused).
    tick, day
        Simulation clock when the event happened.
    kind
        What happened: one of :mod:`ringbus.kinds` or any non-empty string.
    polity_id, ward_id, actor_id, subject_id
        Who and where (``subject_id`` is the corridor, depot, ...), or ``None``.
    payload
        A mapping or an iterable of ``(key, value)`` pairs; stored as a tuple
        of pairs. Values are ``None``, ``bool``, ``int``, finite ``float``,
        ``str`` or lists/tuples of them (stored as tuples).
    tags
        Free labels.
    """

    # Holds only str, int, None and tuples of atomic values: it can never be
    # part of a reference cycle, so it stays out of the cyclic GC (no_gc).
    cdef long long _seq
    cdef long long _tick
    cdef long long _day
    cdef object _kind
    cdef object _polity_id
    cdef object _ward_id
    cdef object _actor_id
    cdef object _subject_id
    cdef tuple _flat  # keys and values, alternating; None while a view
    cdef tuple _pairs
    cdef tuple _tags
    # An event handed to subscribers by drain() is a view: its payload stays
    # in the ring slot until read, or until the ring is about to overwrite
    # the slot, whichever comes first; then it takes its own copy.
    cdef _Storage _view_of
    cdef Py_ssize_t _slot

    __match_args__ = FIELDS

    def __init__(
        self,
        seq,
        tick,
        day,
        kind,
        polity_id=None,
        ward_id=None,
        actor_id=None,
        subject_id=None,
        payload=(),
        tags=(),
    ):
        if self._flat is not None or self._view_of is not None:
            raise AttributeError("WorldEvent is immutable: cannot set 'seq'")
        cdef long long seq_value = check_non_negative("seq", seq)
        cdef long long tick_value = check_non_negative("tick", tick)
        cdef long long day_value = check_non_negative("day", day)
        kind = check_kind(kind)
        polity_id = check_id("polity_id", polity_id)
        ward_id = check_id("ward_id", ward_id)
        actor_id = check_id("actor_id", actor_id)
        subject_id = check_id("subject_id", subject_id)
        cdef tuple pairs = normalise_payload(payload, None)
        tags = normalise_tags(tags)
        self._seq = seq_value
        self._tick = tick_value
        self._day = day_value
        self._kind = kind
        self._polity_id = polity_id
        self._ward_id = ward_id
        self._actor_id = actor_id
        self._subject_id = subject_id
        self._pairs = pairs
        self._tags = tags
        self._flat = _flat_from_pairs(pairs)

    def __dealloc__(self):
        if self._view_of is not None and self._view_of.views[self._slot] == <PyObject*>self:
            self._view_of.views[self._slot] = NULL

    cdef int _materialise(self) except -1:
        """Copy the payload out of the ring slot this event is a view of."""
        cdef _Storage storage = self._view_of  # owned: the event may lose it meanwhile
        cdef Py_ssize_t slot = self._slot
        cdef object flat = storage.flat_copy(slot, self._seq)
        if self._flat is not None:
            # The copy ran a collection whose code overwrote the slot, and
            # that overwrite already gave this event its own copy.
            return 0
        if flat is None:
            # An overwrite always copies the payload of the view on its slot
            # out first (RingCore._prepare_slot), so this cannot happen.
            raise RuntimeError(f"event seq {self._seq} lost its payload")
        self._flat = <tuple>flat
        storage.views[slot] = NULL
        self._view_of = None
        return 0

    cdef inline tuple _payload_flat(self):
        if self._flat is None:
            self._materialise()
        return self._flat

    def __setattr__(self, name, value):
        raise AttributeError(f"WorldEvent is immutable: cannot set {name!r}")

    def __delattr__(self, name):
        raise AttributeError(f"WorldEvent is immutable: cannot delete {name!r}")

    @property
    def seq(self):
        return self._seq

    @property
    def tick(self):
        return self._tick

    @property
    def day(self):
        return self._day

    @property
    def kind(self):
        return self._kind

    @property
    def polity_id(self):
        return self._polity_id

    @property
    def ward_id(self):
        return self._ward_id

    @property
    def actor_id(self):
        return self._actor_id

    @property
    def subject_id(self):
        return self._subject_id

    @property
    def payload(self):
        # Built on first read: handlers that only count never pay for pairs.
        if self._pairs is None:
            self._pairs = _pairs_from_flat(self._payload_flat())
        return self._pairs

    @property
    def tags(self):
        return self._tags

    cdef tuple _key(self):
        return (
            self._seq,
            self._tick,
            self._day,
            self._kind,
            self._polity_id,
            self._ward_id,
            self._actor_id,
            self._subject_id,
            self.payload,
            self._tags,
        )

    def __eq__(self, other):
        if type(other) is not WorldEvent:
            return NotImplemented
        return self._key() == (<WorldEvent>other)._key()

    def __ne__(self, other):
        if type(other) is not WorldEvent:
            return NotImplemented
        return self._key() != (<WorldEvent>other)._key()

    def __hash__(self):
        return hash(self._key())

    def __repr__(self):
        return (
            f"WorldEvent(seq={self._seq}, tick={self._tick}, day={self._day}, "
            f"kind={self._kind!r}, polity_id={self._polity_id!r}, "
            f"ward_id={self._ward_id!r}, actor_id={self._actor_id!r}, "
            f"subject_id={self._subject_id!r}, payload={self.payload!r}, "
            f"tags={self._tags!r})"
        )

    def __reduce__(self):
        return (WorldEvent, self._key())

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self

    def to_dict(self):
        """Return the event as a new JSON-ready dict (payload as a dict, tuples as lists)."""
        cdef dict payload = {}
        cdef tuple flat = self._payload_flat()
        cdef Py_ssize_t i
        for i in range(0, len(flat), 2):
            value = flat[i + 1]
            payload[flat[i]] = jsonify(value) if type(value) is tuple else value
        return {
            "seq": self._seq,
            "tick": self._tick,
            "day": self._day,
            "kind": self._kind,
            "polity_id": self._polity_id,
            "ward_id": self._ward_id,
            "actor_id": self._actor_id,
            "subject_id": self._subject_id,
            "payload": payload,
            "tags": list(self._tags),
        }

    def payload_dict(self):
        """Return the payload as a new dict; the event is untouched.

        Nested mappings (frozen as tuples of pairs) come back as dicts.
        """
        cdef dict payload = {}
        cdef tuple flat = self._payload_flat()
        cdef Py_ssize_t i
        cdef object value
        for i in range(0, len(flat), 2):
            value = flat[i + 1]
            payload[flat[i]] = thaw_value(value) if type(value) is tuple else value
        return payload

    @classmethod
    def from_dict(cls, data):
        """Build an event from the output of :meth:`to_dict` (e.g. a JSON line)."""
        return cls(*event_args_from_dict(data, FIELDS))


cdef tuple _make_entry(
    Py_ssize_t max_items, object kind, object tick, object day, object polity_id, object ward_id,
    object actor_id, object subject_id, object payload, object tags, object priority,
    bint rebuilding,
):
    """Check an event as ``RingCore._publish`` does; return it as an inbox entry."""
    cdef int lane = NORMAL if priority is None else lane_of(priority)
    # The checks of _publish, in the same order; the payload is kept as a
    # flat tuple of keys and values (the ring's layout), owned by the entry.
    cdef PyObject* flat[MAX_FLAT]
    cdef Py_ssize_t count = 0
    cdef Py_ssize_t i
    cdef long long tick_value, day_value
    cdef object pairs
    cdef tuple packed
    if type(kind) is not str or PyUnicode_GET_LENGTH(kind) == 0:
        kind = check_kind(kind)
    tick_value = -1 if tick is None else _clock_arg("tick", tick)
    day_value = -1 if day is None else _clock_arg("day", day)
    if polity_id is not None and type(polity_id) is not str:
        polity_id = check_id("polity_id", polity_id)
    if ward_id is not None and type(ward_id) is not str:
        ward_id = check_id("ward_id", ward_id)
    if actor_id is not None and type(actor_id) is not str:
        actor_id = check_id("actor_id", actor_id)
    if subject_id is not None and type(subject_id) is not str:
        subject_id = check_id("subject_id", subject_id)
    if payload is not None:
        if not (
            type(payload) is dict
            and len(<dict>payload) <= max_items
            and _scalar_dict(<dict>payload, flat, &count)
        ):
            pairs = normalise_payload(
                payload, None if rebuilding else max_items
            )
            count = len(<tuple>pairs)
            if count > max_items:
                raise ValueError(
                    f"inbox event has {count} payload items, "
                    f"more than max_payload_items={max_items}"
                )
            for i in range(count):
                flat[2 * i] = _tuple_get(pairs[i], 0)
                flat[2 * i + 1] = _tuple_get(pairs[i], 1)
                _incref(flat[2 * i])
                _incref(flat[2 * i + 1])
    # flat[:2 * count] holds references of ours: the tuple takes them over.
    try:
        packed = PyTuple_New(2 * count)
    except BaseException:
        _release(flat, 2 * count)
        raise
    for i in range(2 * count):
        _tuple_set(packed, i, flat[i])
    if type(tags) is not tuple or not _str_tuple(<tuple>tags):
        tags = normalise_tags(tags)
    return (
        kind, tick_value, day_value, polity_id, ward_id, actor_id, subject_id, packed, tags, lane
    )


@cython.auto_pickle(False)
cdef class Producer:
    """A handle that publishes into a bus from any thread.

    Made by :meth:`RingCore.producer`. :meth:`publish` checks the event at
    once (its errors go to the caller) and puts it in the producer's inbox;
    the inbox enters the bus at the start of the owner thread's next drain.
    """

    cdef object _name
    cdef Py_ssize_t _max_items
    cdef bint _enabled
    cdef list _inbox
    cdef bint _closed

    def __init__(self, *args, **kwargs):
        raise TypeError("make producers with bus.producer(name)")

    @property
    def name(self):
        """The producer's name."""
        return self._name

    @property
    def closed(self):
        """Whether :meth:`close` (or the bus's ``close_producers``) closed it."""
        return self._closed

    def publish(
        self,
        kind,
        tick=None,
        day=None,
        *,
        polity_id=None,
        ward_id=None,
        actor_id=None,
        subject_id=None,
        payload=None,
        tags=(),
        priority=None,
    ):
        """Check one event and put it in the inbox; any thread may call this.

        Arguments as the bus's ``publish``; the seq is given when the event
        enters the bus (at the start of the next drain), so none is
        returned. A disabled bus keeps nothing.

        Raises
        ------
        TypeError, ValueError
            A field is of the wrong type or value.
        ProducerClosedError
            The producer is closed.
        """
        if not self._enabled:
            return None
        if self._closed:
            raise ProducerClosedError(producer_closed_message(self._name))
        cdef tuple entry = _make_entry(
            self._max_items, kind, tick, day, polity_id, ward_id, actor_id, subject_id, payload,
            tags, priority, False,
        )
        # No Python code runs between reading the inbox and appending to it.
        with cython.critical_section(self):
            if self._closed:
                raise ProducerClosedError(producer_closed_message(self._name))
            self._inbox.append(entry)
        return None

    def close(self):
        """Refuse further events; return how many are still waiting in the inbox."""
        return self._close()

    cdef Py_ssize_t _close(self):
        with cython.critical_section(self):
            self._closed = True
            return len(self._inbox)

    cdef list _take(self):
        cdef list empty = []  # allocated first: the swap below runs no code
        cdef list batch
        with cython.critical_section(self):
            batch = self._inbox
            self._inbox = empty
        return batch

    cdef int _put_back(self, list rest) except -1:
        if rest:
            with cython.critical_section(self):
                self._inbox[:0] = rest
        return 0

    cdef int _put_back_last(self, list entries) except -1:
        with cython.critical_section(self):
            self._inbox.extend(entries)
        return 0

    cdef list _entries(self):
        with cython.critical_section(self):
            return list(self._inbox)

    def __len__(self):
        return len(self._inbox)

    def __repr__(self):
        state = " closed" if self._closed else ""
        return f"<Producer {self._name!r}{state} inbox={len(self._inbox)}>"


@cython.auto_pickle(False)
cdef class RingCore:
    """The ring, the seq counter, the pending queue and the drain loop.

    :class:`ringbus.EventBus` builds on this class; use that. The core keeps
    the last ``max_events`` events in a ring that overwrites the oldest, and
    the events published since the last drain in a bounded pending queue
    that holds its own references, so an event is dispatched exactly once
    even when the ring has wrapped past it.

    Handlers come from per-kind routes: ``_routes`` maps a kind to a tuple of
    ``(handler, subscription)`` entries; a kind not in it is looked up once
    through :meth:`_resolve_route`. It holds at most :data:`ROUTE_CACHE_LIMIT`
    kinds: caching one more starts it afresh.
    """

    cdef Py_ssize_t _max_events
    cdef Py_ssize_t _max_payload_items
    cdef Py_ssize_t _max_pending
    cdef Py_ssize_t _cascade_rounds
    cdef Py_ssize_t _ostride
    cdef bint _enabled
    cdef bint _raise_when_full
    cdef bint _monotonic
    cdef bint _draining
    cdef long long _seq
    cdef long long _tick
    cdef long long _day
    # Positions count stored events; position p lives in slot p % _max_events.
    # Events at positions >= _next_pos are pending; pending events that the
    # ring overwrote wait, as built events, in _spill.
    cdef long long _pos
    cdef long long _next_pos
    # _pos % _max_events and _next_pos % _max_events, kept as they move: a
    # 64-bit division per event costs more than everything around it.
    cdef Py_ssize_t _pos_slot
    cdef Py_ssize_t _next_slot
    cdef _Storage _ring
    cdef object _spill
    # Urgent lane: (position, seq) of pending urgent events; _done holds the
    # positions of those already dispatched ahead of their turn.
    cdef object _urgent
    cdef set _done
    # The lane of each pending "high" or "low" event, by seq.
    cdef dict _levels
    # Direct delivery: destination of each pending direct event, by seq.
    cdef dict _destinations
    cdef readonly dict _routes
    cdef long long _published
    cdef long long _dispatched
    cdef long long _delivered
    cdef long long _handler_errors
    cdef long long _overwritten
    cdef unsigned long _owner
    # Producers in the order they were made: their inboxes enter the ring in
    # this order at the start of each drain.
    cdef list _producers
    cdef bint _inboxes_held

    def __cinit__(self, *args, **kwargs):
        self._owner = PyThread_get_thread_ident()
        self._producers = []
        self._ring = _Storage(1, O_PAIRS)
        self._max_events = 1
        self._monotonic = True
        self._routes = {}
        self._spill = deque()
        self._urgent = deque()
        self._done = set()
        self._levels = {}
        self._destinations = {}

    def __init__(
        self,
        max_events=50_000,
        max_payload_items=12,
        max_pending=1_000_000,
        enabled=True,
        drop_policy="DROP_OLDEST",
        cascade_rounds=1,
        clock_policy="monotonic",
    ):
        cdef Py_ssize_t capacity = check_positive("max_events", max_events)
        cdef Py_ssize_t items = check_positive(
            "max_payload_items", max_payload_items, MAX_PAYLOAD_ITEMS_LIMIT
        )
        check_ring_size(capacity, items)  # before allocating, with the twin's message
        cdef Py_ssize_t pending = check_positive("max_pending", max_pending)
        if drop_policy not in DROP_POLICIES:
            raise ValueError(
                f"drop_policy must be one of {', '.join(DROP_POLICIES)}, got {drop_policy!r}"
            )
        cdef Py_ssize_t rounds = check_positive("cascade_rounds", cascade_rounds)
        if clock_policy not in CLOCK_POLICIES:
            raise ValueError(
                f"clock_policy must be one of {', '.join(CLOCK_POLICIES)}, got {clock_policy!r}"
            )
        cdef Py_ssize_t stride = O_PAIRS + 2 * items
        self._ring = _Storage(capacity, stride)
        self._max_events = capacity
        self._max_payload_items = items
        self._max_pending = pending
        self._cascade_rounds = rounds
        self._ostride = stride
        self._raise_when_full = drop_policy == "RAISE"
        self._monotonic = clock_policy == "monotonic"
        self._enabled = bool(enabled)
        self._routes = {}
        self._spill = deque()
        self._urgent = deque()
        self._done = set()
        self._levels = {}
        self._destinations = {}
        self._seq = 0
        self._tick = 0
        self._day = 0
        self._pos = 0
        self._next_pos = 0
        self._pos_slot = 0
        self._next_slot = 0
        self._draining = False
        self._published = 0
        self._dispatched = 0
        self._delivered = 0
        self._handler_errors = 0
        self._overwritten = 0

    def __reduce__(self):
        raise TypeError(f"{type(self).__name__} cannot be pickled: use snapshot()")

    # -- the owner thread ------------------------------------------------
    @property
    def owner_thread(self):
        """Ident (``threading.get_ident()``) of the thread the bus belongs to.

        ``publish``, ``ingest``, ``set_clock`` and ``drain`` (and the
        facade's ``subscribe``, ``unsubscribe`` and ``restore``) raise
        :class:`~ringbus.WrongThreadError` from any other thread; other
        threads publish through :meth:`producer` handles.
        """
        return self._owner

    def transfer_to_current_thread(self):
        """Make the calling thread the bus's owner.

        Call it from the thread that takes the bus over, once the previous
        owner has stopped using it (handed over through a join or a queue).
        """
        self._owner = PyThread_get_thread_ident()

    def _check_owner(self, what):
        """Raise :class:`~ringbus.WrongThreadError` unless called from the owner thread."""
        cdef unsigned long current = PyThread_get_thread_ident()
        if current != self._owner:
            raise WrongThreadError(wrong_thread_message(what, self._owner, current))

    # -- configuration -------------------------------------------------
    @property
    def enabled(self):
        """Whether :meth:`publish` stores events (``False``: a cheap no-op)."""
        return self._enabled

    @property
    def max_events(self):
        """Number of slots in the ring."""
        return self._max_events

    @property
    def max_payload_items(self):
        """Largest number of payload pairs an event keeps."""
        return self._max_payload_items

    @property
    def clock_policy(self):
        """``"monotonic"`` (time never goes backwards) or ``"free"``."""
        return "monotonic" if self._monotonic else "free"

    @property
    def max_pending(self):
        """Largest number of events waiting for :meth:`drain`."""
        return self._max_pending

    # -- clock ---------------------------------------------------------
    @property
    def tick(self):
        """The bus clock's tick, used when :meth:`publish` is given none."""
        return self._tick

    @property
    def day(self):
        """The bus clock's day, used when :meth:`publish` is given none."""
        return self._day

    def set_clock(self, tick, day=None):
        """Set the bus clock (once per tick, from the sim loop).

        Time never goes backwards: neither ``tick`` nor ``day`` may be lower
        than the clock's.

        Parameters
        ----------
        tick
            The current tick.
        day
            The current day; ``None`` keeps the current one.

        Raises
        ------
        ValueError
            ``tick`` or ``day`` is before the clock's.
        """
        if PyThread_get_thread_ident() != self._owner:
            self._check_owner("set_clock")
        cdef long long tick_value = _clock_arg("tick", tick)
        cdef long long day_value = self._day if day is None else _clock_arg("day", day)
        if self._monotonic and tick_value < self._tick:
            raise ValueError(clock_back_message("tick", self._tick, tick_value))
        if self._monotonic and day_value < self._day:
            raise ValueError(clock_back_message("day", self._day, day_value))
        self._tick = tick_value
        self._day = day_value

    # -- publishing ----------------------------------------------------
    def publish(
        self,
        kind,
        tick=None,
        day=None,
        *,
        polity_id=None,
        ward_id=None,
        actor_id=None,
        subject_id=None,
        payload=None,
        tags=(),
        priority=None,
    ):
        """Accept one event and return its seq (``0`` when the bus is disabled).

        Parameters
        ----------
        kind
            What happened (see :mod:`ringbus.kinds`).
        tick, day
            Sim clock; ``None`` takes the bus clock. Never before the
            clock's (time never goes backwards); a later one moves the
            clock forward to it.
        polity_id, ward_id, actor_id, subject_id
            Who and where, ``str`` or ``None``.
        payload
            A dict, an iterable of ``(key, value)`` pairs, or ``None``.
            More than ``max_payload_items`` pairs are cut to exactly that
            many, the last being ``("__truncated__", True)``.
        tags
            An iterable of ``str``.
        priority
            ``"low"``, ``"normal"`` (``None``), ``"high"`` or ``"urgent"``:
            within a drain round, higher priorities are dispatched first, in
            seq order within each.

        Raises
        ------
        TypeError, ValueError
            A field is of the wrong type or value, or ``tick``/``day`` is
            before the clock's; the message names it.
        PendingOverflowError
            ``max_pending`` events are already waiting for :meth:`drain`.
        RingFullError
            The ring is full and ``drop_policy`` is ``"RAISE"``.
        """
        # Reached through the generic argument parser only when _publish_fastcall
        # meets a call it does not handle itself (see the end of this module).
        if not self._enabled:
            return 0
        cdef int lane
        if priority is not None:
            lane = lane_of(priority)
            if lane != NORMAL:
                return self._publish_routed(
                    lane, None, kind, tick, day, polity_id, ward_id, actor_id, subject_id,
                    payload, tags,
                )
        return self._publish(
            kind, tick, day, polity_id, ward_id, actor_id, subject_id, payload, tags
        )

    cdef object _publish(
        self, object kind, object tick, object day, object polity_id, object ward_id,
        object actor_id, object subject_id, object payload, object tags,
    ):
        cdef PyObject* flat[MAX_FLAT]
        cdef Py_ssize_t count = 0
        cdef Py_ssize_t i
        cdef long long tick_value, day_value
        cdef object pairs
        if not self._enabled:
            return 0
        if PyThread_get_thread_ident() != self._owner:
            self._check_owner("publish")
        if type(kind) is not str or PyUnicode_GET_LENGTH(kind) == 0:
            kind = check_kind(kind)
        # -1: the bus clock, read when the event is stored.
        tick_value = -1 if tick is None else _clock_arg("tick", tick)
        day_value = -1 if day is None else _clock_arg("day", day)
        if polity_id is not None and type(polity_id) is not str:
            polity_id = check_id("polity_id", polity_id)
        if ward_id is not None and type(ward_id) is not str:
            ward_id = check_id("ward_id", ward_id)
        if actor_id is not None and type(actor_id) is not str:
            actor_id = check_id("actor_id", actor_id)
        if subject_id is not None and type(subject_id) is not str:
            subject_id = check_id("subject_id", subject_id)
        if payload is not None:
            if not (
                type(payload) is dict
                and len(<dict>payload) <= self._max_payload_items
                and _scalar_dict(<dict>payload, flat, &count)
            ):
                # Everything but a small dict of scalars: the shared normaliser.
                pairs = normalise_payload(payload, self._max_payload_items)
                count = len(<tuple>pairs)
                for i in range(count):
                    flat[2 * i] = _tuple_get(pairs[i], 0)
                    flat[2 * i + 1] = _tuple_get(pairs[i], 1)
                    _incref(flat[2 * i])
                    _incref(flat[2 * i + 1])
        # From here on flat[:2 * count] holds references of ours, which
        # _store takes over (or drops, when it refuses the event).
        if type(tags) is not tuple or not _str_tuple(<tuple>tags):
            try:
                tags = normalise_tags(tags)
            except BaseException:
                _release(flat, 2 * count)
                raise
        return self._store(
            0, tick_value, day_value, kind, polity_id, ward_id, actor_id, subject_id, tags,
            flat, count,
        )

    def ingest(self, event):
        """Accept an already built event, keeping its seq (replay, restore).

        The event's seq must be greater than :meth:`latest_seq`; gaps are
        allowed (a journal may hold only some kinds). Returns the seq, or
        ``0`` when the bus is disabled.
        """
        cdef PyObject* flat[MAX_FLAT]
        cdef WorldEvent built
        cdef Py_ssize_t i, count
        if not self._enabled:
            return 0
        if PyThread_get_thread_ident() != self._owner:
            self._check_owner("ingest")
        if type(event) is not WorldEvent:
            raise TypeError(f"ingest() takes a WorldEvent, got {type(event).__name__}")
        built = <WorldEvent>event
        self._check_ingest_seq(built._seq)
        # May copy the payload out of a ring slot (and so run code): before
        # anything is decided from the bus's state.
        cdef tuple payload = built._payload_flat()
        count = len(payload) >> 1
        if count > self._max_payload_items:
            raise ValueError(
                f"event seq {built._seq} has {count} payload items, "
                f"more than max_payload_items={self._max_payload_items}"
            )
        for i in range(2 * count):
            flat[i] = _tuple_get(payload, i)
            _incref(flat[i])
        return self._store(
            built._seq, built._tick, built._day, built._kind, built._polity_id,
            built._ward_id, built._actor_id, built._subject_id, built._tags, flat, count,
        )

    @cython.final
    cdef int _check_ingest_seq(self, long long seq) except -1:
        if seq <= self._seq:
            raise ValueError(
                f"event seq {seq} is not after latest_seq {self._seq}: "
                "ingested seqs must increase"
            )
        return 0

    def _publish_routed(
        self, lane, destination, kind, tick, day, polity_id, ward_id, actor_id,
        subject_id, payload, tags,
    ):
        """Publish into a lane (an index of ``PRIORITIES``) and/or to one destination."""
        if destination is not None and (type(destination) is not str or not destination):
            raise TypeError(f"destination must be a non-empty str, got {destination!r}")
        check_lane(lane)
        seq = self._publish(
            kind, tick, day, polity_id, ward_id, actor_id, subject_id, payload, tags
        )
        if seq:
            self._mark(seq, lane, destination)
        return seq

    def _ingest_routed(self, event, lane, destination):
        """``ingest`` into a lane and/or to one destination (restore)."""
        if destination is not None and (type(destination) is not str or not destination):
            raise TypeError(f"destination must be a non-empty str, got {destination!r}")
        check_lane(lane)
        seq = self.ingest(event)
        if seq:
            self._mark(seq, lane, destination)
        return seq

    @cython.final
    cdef int _mark(self, long long seq, int lane, object destination) except -1:
        cdef long long position = self._pos - 1  # the event just stored
        cdef Py_ssize_t index
        cdef tuple entry
        if lane != URGENT and lane != NORMAL:
            self._levels[seq] = lane
        if lane == URGENT:
            entry = (position, seq)  # may run finalizers that publish urgent events too
            index = len(self._urgent)
            while index and (<tuple>self._urgent[index - 1])[0] > position:
                index -= 1
            self._urgent.insert(index, entry)  # the lane stays in position order
        if destination is not None:
            self._destinations[seq] = destination
        return 0

    def pending_routing(self):
        """``(seq, lane)`` of pending events not in the normal lane, in seq order, and
        ``(seq, destination)`` of pending direct ones."""
        cdef list lanes = [(seq, URGENT) for _position, seq in self._urgent]
        lanes += self._levels.items()
        return sorted(lanes), sorted(self._destinations.items())

    cdef inline long long _pending_count(self):
        return self._pos - self._next_pos - len(self._done)

    cdef inline int _is_pending(self, long long position) except -1:
        """Whether the event at ``position`` has not been dispatched yet."""
        return position >= self._next_pos and not (self._done and position in self._done)

    cdef inline bint _full(self, long long seq, long long tick, long long day) noexcept:
        """Whether storing an event (with ``seq``, or numbered next if 0; at
        ``tick`` and ``day``, or the clock's if -1) must be refused."""
        return (
            (seq != 0 and seq <= self._seq)
            or (self._monotonic and (
                (tick >= 0 and tick < self._tick) or (day >= 0 and day < self._day)
            ))
            or self._pending_count() >= self._max_pending
            or (self._raise_when_full and self._pos >= self._max_events)
        )

    @cython.final
    cdef int _refuse(self, long long seq, long long tick, long long day) except -1:
        """Raise the error that ``_full`` found."""
        if seq != 0:
            self._check_ingest_seq(seq)
        if self._monotonic and tick >= 0 and tick < self._tick:
            raise ValueError(event_before_clock_message("tick", tick, self._tick))
        if self._monotonic and day >= 0 and day < self._day:
            raise ValueError(event_before_clock_message("day", day, self._day))
        if self._pending_count() >= self._max_pending:
            raise PendingOverflowError(pending_overflow_message(self._max_pending))
        if self._raise_when_full and self._pos >= self._max_events:
            raise RingFullError(ring_full_message(self._max_events))
        raise AssertionError("_refuse() found nothing to refuse")  # cannot happen

    @cython.final
    cdef int _prepare_slot(self, long long seq, long long tick, long long day) except -1:
        """Make the slot at ``_pos`` ready to be overwritten, or refuse the event.

        An event handed out as a view on the slot gets its own payload copy;
        the event in the slot, if still pending, is kept in the spill. Both
        allocate, and an allocation can run the cyclic GC and so finalizers
        that publish, drain or read: after each, the ring is looked at
        afresh. It returns after a look that needed nothing, having run no
        Python code since, so the caller writes the slot that look saw.
        """
        cdef _Storage ring = self._ring
        cdef object kept = None  # the pending event to spill, built by an earlier pass
        cdef WorldEvent view
        cdef Py_ssize_t slot
        cdef long long victim
        cdef bint occupied, spill
        while True:
            slot = self._pos_slot
            occupied = ring.meta[slot * M_STRIDE + M_SEQ] != 0
            spill = False
            if occupied:
                if ring.views[slot] != NULL:
                    view = <WorldEvent>ring.views[slot]  # owned while it copies
                    view._materialise()
                    continue
                victim = self._pos - self._max_events
                spill = self._is_pending(victim)
                if spill and (
                    kept is None or (<WorldEvent>kept)._seq != ring.meta[slot * M_STRIDE + M_SEQ]
                ):
                    kept = self._event_at(victim)  # None if overwritten meanwhile
                    continue
            # Nothing in the way any more; no Python code runs from here on.
            if self._full(seq, tick, day):
                self._refuse(seq, tick, day)
            if spill:
                self._spill.append(kept)  # allocates no object: runs no collection
            return 0

    @cython.final
    cdef long long _store(
        self, long long seq, long long tick, long long day, object kind, object polity_id,
        object ward_id, object actor_id, object subject_id, object tags, PyObject** flat,
        Py_ssize_t count,
    ) except -1:
        """Write one event into the slot at ``_pos`` and return its seq.

        ``seq`` 0 numbers the event next (publish); otherwise it is the
        event's own (ingest). ``tick``/``day`` -1 take the bus clock. Takes over the references in ``flat[:2 * count]``
        whatever happens.
        """
        cdef _Storage ring = self._ring
        cdef Py_ssize_t slot = self._pos_slot
        cdef long long* meta = ring.meta + slot * M_STRIDE
        cdef PyObject** objs
        cdef PyObject* old[O_PAIRS + MAX_FLAT]
        cdef Py_ssize_t used = 0
        cdef Py_ssize_t i
        cdef Py_ssize_t ahead
        if meta[M_SEQ] != 0 and (
            ring.views[slot] != NULL or self._pos - self._max_events >= self._next_pos
        ):
            # A view or a pending event in the way: the slow path, which may run code.
            try:
                self._prepare_slot(seq, tick, day)
            except BaseException:
                _release(flat, 2 * count)
                raise
            slot = self._pos_slot
            meta = ring.meta + slot * M_STRIDE
        elif self._full(seq, tick, day):
            _release(flat, 2 * count)
            self._refuse(seq, tick, day)
        # From here to the end no Python code runs until the slot is written.
        if seq == 0:
            seq = self._seq + 1
        # The clock is read now, after any code that may have moved it; an
        # event later than the clock moves it forward.
        if tick < 0:
            tick = self._tick
        if day < 0:
            day = self._day
        objs = ring.objs + slot * ring.stride
        ahead = slot + 4
        if ahead >= self._max_events:
            ahead %= self._max_events
        # In a large ring the slot written a few events from now was last
        # touched a lap ago: ask for its cache lines early.
        RINGBUS_PREFETCH_WRITE(ring.meta + ahead * M_STRIDE)
        RINGBUS_PREFETCH_WRITE(ring.objs + ahead * ring.stride)
        RINGBUS_PREFETCH_WRITE(ring.objs + ahead * ring.stride + 8)
        if meta[M_SEQ] != 0:
            used = O_PAIRS + 2 * meta[M_NPAIRS]
            memcpy(old, objs, used * sizeof(PyObject*))
            self._overwritten += 1
        meta[M_SEQ] = seq
        meta[M_TICK] = tick
        meta[M_DAY] = day
        meta[M_NPAIRS] = count
        objs[O_KIND] = <PyObject*>kind
        objs[O_POLITY] = <PyObject*>polity_id
        objs[O_WARD] = <PyObject*>ward_id
        objs[O_ACTOR] = <PyObject*>actor_id
        objs[O_SUBJECT] = <PyObject*>subject_id
        objs[O_TAGS] = <PyObject*>tags
        for i in range(O_PAIRS):
            _incref(objs[i])
        # The payload references are the caller's, handed over.
        memcpy(objs + O_PAIRS, flat, 2 * count * sizeof(PyObject*))
        self._seq = seq
        if self._monotonic:
            self._tick = tick
            self._day = day
        self._pos += 1
        self._pos_slot = slot + 1 if slot + 1 < self._max_events else 0
        self._published += 1
        # Release what was overwritten only now, when the ring is consistent.
        # The ring holds only exact str, int, float, bool, None and tuples of
        # them, so this frees objects without running any Python code.
        for i in range(used):
            _xdecref(old[i])
        return seq

    @cython.final
    cdef void _fill_header(self, WorldEvent event, Py_ssize_t slot):
        cdef _Storage ring = self._ring
        cdef long long* meta = ring.meta + slot * M_STRIDE
        cdef PyObject** objs = ring.objs + slot * ring.stride
        event._seq = meta[M_SEQ]
        event._tick = meta[M_TICK]
        event._day = meta[M_DAY]
        # A recycled event often holds the same objects already (None ids,
        # the empty tags tuple): skip those assignments' reference counting.
        if <PyObject*>event._kind != objs[O_KIND]:
            event._kind = <object>objs[O_KIND]
        if <PyObject*>event._polity_id != objs[O_POLITY]:
            event._polity_id = <object>objs[O_POLITY]
        if <PyObject*>event._ward_id != objs[O_WARD]:
            event._ward_id = <object>objs[O_WARD]
        if <PyObject*>event._actor_id != objs[O_ACTOR]:
            event._actor_id = <object>objs[O_ACTOR]
        if <PyObject*>event._subject_id != objs[O_SUBJECT]:
            event._subject_id = <object>objs[O_SUBJECT]
        if <PyObject*>event._tags != objs[O_TAGS]:
            event._tags = <tuple>objs[O_TAGS]

    @cython.final
    cdef object _event_at(self, long long position):
        """Build the event at ``position`` with its own payload copy, or None
        if it is no longer retained (also when it is overwritten meanwhile:
        both allocations below may run finalizers that publish)."""
        cdef _Storage ring = self._ring
        cdef Py_ssize_t slot = <Py_ssize_t>(position % self._max_events)
        cdef long long seq
        cdef object flat
        if position < self._oldest_pos() or position >= self._pos:
            return None
        seq = ring.meta[slot * M_STRIDE + M_SEQ]
        cdef WorldEvent event = WorldEvent.__new__(WorldEvent)
        flat = ring.flat_copy(slot, seq)
        if flat is None:
            return None
        # No allocation since flat_copy looked at the slot: it still holds seq.
        self._fill_header(event, slot)
        event._flat = <tuple>flat
        return event

    @cython.final
    cdef WorldEvent _view_at(self, long long position, Py_ssize_t slot, WorldEvent spare):
        """Build the event at ``position`` (in ``slot``) as a view on it (for
        drain), or return None if it was overwritten meanwhile.

        ``spare`` is the event the previous delivery used: when nothing else
        holds it any more (only the drain loop's reference is left), it is
        refilled instead of freeing one event and allocating the next. No
        one can tell: an object nobody references cannot be observed.
        """
        cdef _Storage ring = self._ring
        cdef WorldEvent event
        if spare is not None and _refcount(spare) == 1:  # only the loop holds it (borrowed here)
            event = spare
            if event._view_of is not None:
                if event._view_of.views[event._slot] == <PyObject*>event:
                    event._view_of.views[event._slot] = NULL
                event._view_of = None
            event._flat = None
            event._pairs = None
        else:
            # Allocating may run finalizers that publish over this slot.
            event = WorldEvent.__new__(WorldEvent)
            if position < self._oldest_pos():
                return None
        # Dropping the spare's old fields frees only exact str/tuple objects:
        # no Python code runs between the check above and the view below.
        self._fill_header(event, slot)
        if ring.meta[slot * M_STRIDE + M_NPAIRS] == 0:
            event._flat = _EMPTY
            return event
        if ring.views[slot] != NULL:  # cannot happen: an overwrite clears it
            (<WorldEvent>ring.views[slot])._materialise()
        event._view_of = ring
        event._slot = slot
        ring.views[slot] = <PyObject*>event
        return event

    # -- producers ------------------------------------------------------
    def producer(self, name):
        """The producer handle called ``name``: its ``publish`` may be called from any thread.

        A producer's events wait in its inbox and enter the ring at the start
        of the next :meth:`drain` on the owner thread, where they get their
        seqs: producers in the order they were made, each one's events in
        the order it published them. Asking again for a name returns the
        same handle.

        Raises
        ------
        TypeError
            ``name`` is not a non-empty str.
        ValueError
            The producer of that name was closed and its inbox is not empty yet.
        """
        if type(name) is not str or not name:
            raise TypeError(f"producer name must be a non-empty str, got {name!r}")
        self._check_owner("producer")
        cdef Producer producer
        for item in self._producers:
            producer = <Producer>item
            if producer._name == name:
                if producer._closed:
                    raise ValueError(
                        f"producer {name!r} is closed and its events have not entered "
                        "the bus yet: drain() first, then ask for it again"
                    )
                return producer
        producer = Producer.__new__(Producer)
        producer._name = name
        producer._max_items = self._max_payload_items
        producer._enabled = self._enabled
        producer._inbox = []
        producer._closed = False
        self._producers.append(producer)
        return producer

    def producers(self):
        """The producers, in the order their inboxes enter the ring."""
        return list(self._producers)

    def close_producers(self):
        """Close every producer; return how many of their events are still in inboxes.

        A closed producer's ``publish`` raises
        :class:`~ringbus.ProducerClosedError`; what it published before still
        enters the ring at the next :meth:`drain` (and travels in a snapshot
        meanwhile), after which the bus forgets it.
        """
        self._check_owner("close_producers")
        cdef Py_ssize_t waiting = 0
        for producer in self._producers:
            waiting += (<Producer>producer)._close()
        self._producers = [p for p in self._producers if len(p)]
        return waiting

    def _inbox_entry(
        self, kind, tick, day, polity_id, ward_id, actor_id, subject_id, payload, tags,
        priority=None, rebuilding=False,
    ):
        """Check an event as :meth:`publish` does; return it as an inbox entry.

        ``rebuilding`` takes a payload already cut to ``max_payload_items``
        (one that ends with the truncation marker), as a snapshot holds it.
        """
        return _make_entry(
            self._max_payload_items, kind, tick, day, polity_id, ward_id, actor_id, subject_id,
            payload, tags, priority, bool(rebuilding),
        )

    @cython.final
    cdef long long _enter(self, tuple entry) except -1:
        """Store one inbox entry as the next event (as :meth:`publish` does)."""
        cdef PyObject* flat[MAX_FLAT]
        cdef tuple packed = <tuple>entry[7]
        cdef Py_ssize_t count = len(packed) >> 1
        cdef Py_ssize_t i
        cdef long long tick_value = entry[1]
        cdef long long day_value = entry[2]
        cdef int lane = entry[9]
        for i in range(2 * count):
            flat[i] = _tuple_get(packed, i)
            _incref(flat[i])
        seq = self._store(
            0, tick_value, day_value, entry[0], entry[3], entry[4], entry[5], entry[6],
            entry[8], flat, count,
        )
        if lane != NORMAL:
            self._mark(seq, lane, None)
        return seq

    @cython.final
    cdef int _enter_inboxes(self) except -1:
        """Move every inbox into the ring, producers in order (the start of a drain).

        When the pending queue fills up, what did not fit waits for the next
        drain. An event the bus refuses otherwise (before the clock, a full
        ring under ``"RAISE"``) is dropped from its inbox and its error
        raised, with a note; the events after it wait.
        """
        cdef Producer producer
        cdef list batch
        cdef Py_ssize_t index
        try:
            for item in self._producers:
                producer = <Producer>item
                batch = producer._take()
                for index in range(len(batch)):
                    try:
                        self._enter(<tuple>batch[index])
                    except PendingOverflowError:
                        producer._put_back(batch[index:])
                        return 0
                    except Exception as error:
                        producer._put_back(batch[index + 1:])
                        error.add_note(inbox_refused_note(producer._name, batch[index][0]))
                        raise
                    except BaseException:
                        producer._put_back(batch[index:])
                        raise
        finally:
            if any([(<Producer>p)._closed and not (<Producer>p)._inbox for p in self._producers]):
                self._producers = [
                    p for p in self._producers if (<Producer>p)._inbox or not (<Producer>p)._closed
                ]
        return 0

    def _hold_inboxes(self, held):
        """While held, :meth:`drain` leaves the inboxes for a later drain (drain_async's
        later rounds: inboxes enter once per drain, at its start)."""
        self._inboxes_held = bool(held)

    def _inboxes(self):
        """Each producer's name and a copy of its inbox (payloads as pairs), in order."""
        cdef Producer producer
        out = []
        for item in self._producers:
            producer = <Producer>item
            entries = []
            for entry in producer._entries():
                entries.append(entry[:7] + (_pairs_from_flat(entry[7]), entry[8], entry[9]))
            out.append((producer._name, entries))
        return out

    def _load_inbox(self, name, entries):
        """Append ``entries`` (from :meth:`_inbox_entry`) to the inbox of producer ``name``."""
        (<Producer>self.producer(name))._put_back_last(list(entries))

    def _skip_to(self, seq):
        """Move the seq counter forward so the next event gets ``seq + 1``."""
        cdef long long value = _clock_arg("seq", seq)
        if value < self._seq:
            raise ValueError(f"cannot move seq back from {self._seq} to {value}")
        self._seq = value

    # -- dispatch ------------------------------------------------------
    @property
    def draining(self):
        """Whether :meth:`drain` is running (a handler is being called)."""
        return self._draining

    def _invalidate_routes(self):
        """Forget every cached route: the subscriptions changed."""
        self._routes.clear()

    def _resolve_route(self, kind):
        """Return the ``(handler, subscription)`` entries for ``kind``."""
        return ()

    def _on_handler_error(self, event, subscription, error):
        """Called when a handler raised; return True to raise it after the drain."""
        return True

    def _resolve_direct(self, destination, kind):
        """Return the entries for an event sent to ``destination``."""
        return ()

    def _on_undeliverable(self, event, destination):
        """Called for a direct event nobody takes.

        An exception returned is raised after the drain, with the handler errors.
        """
        return None

    cdef inline long long _oldest_pos(self) noexcept:
        return self._pos - min(self._pos, <long long>self._max_events)

    @cython.final
    cdef tuple _route_for(self, object kind, long long seq):
        cdef PyObject* found
        cdef tuple route
        if self._destinations:
            destination = self._destinations.get(seq)
            if destination is not None:
                route = self._resolve_direct(destination, kind)
                if type(route) is not tuple:
                    raise TypeError("_resolve_direct() must return a tuple")
                return route
        found = _dict_get(self._routes, kind)
        if found != NULL:
            return <tuple>found
        route = self._resolve_route(kind)
        if type(route) is not tuple:
            raise TypeError("_resolve_route() must return a tuple")
        if len(self._routes) >= _route_cache_limit:
            # Bounded: a run that keeps inventing kinds re-resolves them
            # instead of growing the cache; a kind seen before is one lookup.
            self._routes.clear()
        self._routes[kind] = route
        return route

    @cython.final
    cdef list _deliver(self, object event, long long seq, tuple route, list errors):
        """Hand ``event`` to every entry of ``route``; collect errors to raise."""
        cdef Py_ssize_t i
        cdef Py_ssize_t size = len(route)
        self._dispatched += 1
        if self._destinations:
            destination = self._destinations.pop(seq, None)
            if destination is not None and not size:
                problem = self._on_undeliverable(event, destination)
                if problem is not None:
                    if errors is None:
                        errors = []
                    errors.append(problem)
        cdef PyObject* entry
        cdef PyObject* result
        for i in range(size):
            entry = _tuple_get(route, i)
            # Called through the C API: the try machinery below runs only for
            # a handler that failed, not around every call.
            result = _call_one(_tuple_get(<object>entry, 0), <PyObject*>event)
            if result != NULL:
                if result == _none or not _isawaitable(<object>result):
                    _xdecref(result)
                    self._delivered += 1
                    continue
                # A sync handler that made a coroutine: it never ran, so the
                # event is a handler error, never a delivery.
                awaitable = <object>result
                _xdecref(result)
                try:
                    refuse_awaitable(awaitable, <object>_tuple_get(<object>entry, 0))
                except Exception as error:
                    awaitable = None
                    self._handler_errors += 1
                    if self._on_handler_error(event, <object>_tuple_get(<object>entry, 1), error):
                        if errors is None:
                            errors = []
                        errors.append(error)
                continue
            if not PyErr_ExceptionMatches(<PyObject*>Exception):
                _raise_pending()  # KeyboardInterrupt and friends end the drain
            try:
                _raise_pending()
            except Exception as error:
                self._handler_errors += 1
                if self._on_handler_error(event, <object>_tuple_get(<object>entry, 1), error):
                    if errors is None:
                        errors = []
                    errors.append(error)
        return errors

    @cython.final
    cdef int _unspill(self, object event) except -1:
        """Remove ``event`` itself from the spill (by identity: comparing
        events would run code)."""
        cdef Py_ssize_t index = 0
        for other in self._spill:
            if other is event:
                del self._spill[index]
                return 0
            index += 1
        raise AssertionError(f"spilled event seq {(<WorldEvent>event)._seq} is missing")

    @cython.final
    cdef object _spilled_event(self, long long seq):
        for event in self._spill:
            if (<WorldEvent>event)._seq == seq:
                return event
        raise AssertionError(f"pending event seq {seq} is missing")  # cannot happen

    @cython.final
    cdef list _deliver_ahead(self, long long position, long long seq, int lane, list errors):
        """Dispatch the pending event at ``position`` ahead of its turn, taking it
        out of its lane and marking it done."""
        cdef bint spilled = position < self._oldest_pos()
        cdef object kind, event
        cdef tuple route
        if spilled:
            event = self._spilled_event(seq)
            kind = (<WorldEvent>event)._kind
        else:
            kind = <object>self._ring.objs[
                (position % self._max_events) * self._ostride + O_KIND
            ]
        route = self._route_for(kind, seq)  # may run code that publishes
        if not spilled:
            event = self._event_at(position)
            if event is None:  # overwritten meanwhile: it was spilled
                spilled = True
                event = self._spilled_event(seq)
        if lane == URGENT:
            self._urgent.popleft()  # the lane's first: it is in position order
        else:
            self._levels.pop(seq, None)
        if spilled:
            self._unspill(event)
        self._done.add(position)
        return self._deliver(event, seq, route, errors)

    @cython.final
    cdef list _dispatch_by_lane(self, long long end, list errors, long long* total):
        """Dispatch the round's events (positions before ``end``) highest lane
        first, in seq order within a lane, each marked done."""
        cdef list order = []
        cdef set urgent
        cdef long long position, seq, oldest
        cdef object spilled = iter(self._spill)
        cdef int lane
        cdef tuple entry
        # The walk allocates: no collection (and so no finalizer that publishes)
        # runs while it reads the ring.
        cdef bint collecting = PyGC_Disable()
        try:
            urgent = {entry_seq for _position, entry_seq in self._urgent}
            oldest = self._oldest_pos()
            position = self._next_pos
            while position < end:
                if not (self._done and position in self._done):
                    if position < oldest:
                        seq = (<WorldEvent>next(spilled))._seq
                    else:
                        seq = self._ring.meta[(position % self._max_events) * M_STRIDE + M_SEQ]
                    lane = URGENT if seq in urgent else self._levels.get(seq, NORMAL)
                    order.append((-lane, position, seq))
                position += 1
        finally:
            if collecting:
                PyGC_Enable()
        order.sort()
        for entry in order:
            errors = self._deliver_ahead(entry[1], entry[2], -<int>entry[0], errors)
            total[0] += 1
        return errors

    def _count_deliveries(self, delivered, handler_errors):
        """Add to the delivery counters (deliveries made outside :meth:`drain`'s loop)."""
        self._delivered += delivered
        self._handler_errors += handler_errors

    def drain(self, max_rounds=None):
        """Dispatch the pending events, in seq order; return how many.

        Each event goes to each matching subscriber in subscription order.
        Events published by handlers wait for the next drain, or, when
        ``max_rounds`` (default: the configured ``cascade_rounds``) is above
        one, for the next round of this drain.

        Raises
        ------
        ExceptionGroup
            One or more handlers raised and the error policy says to raise:
            raised once every event has been delivered to every subscriber.
        CascadeLimitError
            Handlers were still publishing after ``max_rounds`` rounds; their
            events stay pending.
        RuntimeError
            ``drain()`` was called from inside a handler.
        """
        cdef Py_ssize_t rounds = (
            self._cascade_rounds if max_rounds is None
            else check_positive("max_rounds", max_rounds)
        )
        cdef Py_ssize_t round_index, slot
        cdef Py_ssize_t capacity = self._max_events
        cdef long long end, position, seq, total = 0
        cdef bint spilled, needed
        cdef tuple route
        cdef object kind, event
        cdef WorldEvent spare = None
        cdef list errors = None
        if PyThread_get_thread_ident() != self._owner:
            self._check_owner("drain")
        if self._draining:
            raise RuntimeError(
                "drain() was called from inside a handler; events published by "
                "handlers are dispatched by the next drain (or round)"
            )
        if self._producers and not self._inboxes_held:
            self._enter_inboxes()
        self._draining = True
        try:
            for round_index in range(rounds):
                end = self._pos
                if self._next_pos >= end:
                    break
                if self._levels:
                    # "high" or "low" events: order the whole round by lane.
                    errors = self._dispatch_by_lane(end, errors, &total)
                # The urgent lane first: urgent events pending when the round began.
                while self._urgent:
                    position, seq = self._urgent[0]
                    if position >= end:
                        break
                    errors = self._deliver_ahead(position, seq, URGENT, errors)
                    total += 1
                while self._next_pos < end:
                    position = self._next_pos
                    slot = self._next_slot
                    if self._done and position in self._done:
                        self._done.discard(position)  # dispatched by the urgent lane
                        self._next_pos = position + 1
                        self._next_slot = slot + 1 if slot + 1 < capacity else 0
                        continue
                    spilled = position < self._oldest_pos()
                    if spilled:
                        event = self._spill[0]
                        kind = (<WorldEvent>event)._kind
                        seq = (<WorldEvent>event)._seq
                    else:
                        event = None
                        kind = <object>self._ring.objs[slot * self._ostride + O_KIND]
                        seq = self._ring.meta[slot * M_STRIDE + M_SEQ]
                    route = self._route_for(kind, seq)  # may run code that publishes
                    needed = len(route) != 0 or (
                        bool(self._destinations) and seq in self._destinations
                    )
                    if not spilled and position < self._oldest_pos():
                        # Overwritten meanwhile, so spilled: it is the spill's first.
                        spilled = True
                        event = self._spill[0]
                    if spilled:
                        self._spill.popleft()
                    elif needed:
                        event = self._view_at(position, slot, spare)
                        spare = None
                        if event is None:  # overwritten while the view was made
                            event = self._spill.popleft()
                    self._next_pos = position + 1
                    self._next_slot = slot + 1 if slot + 1 < capacity else 0
                    total += 1
                    errors = self._deliver(event, seq, route, errors)
                    if needed and not spilled:
                        spare = <WorldEvent>event
                    event = None
        finally:
            self._draining = False
        cdef long long left = self._pending_count()
        if rounds > 1 and left:
            cascade = CascadeLimitError(cascade_limit_message(rounds, left))
            if errors is None:
                raise cascade
            errors.append(cascade)
        if errors is not None:
            raise ExceptionGroup(handler_errors_message(len(errors)), errors)
        return total

    # -- reading -------------------------------------------------------
    def get_since(self, seq, kinds=None, limit=None):
        """Return retained events with ``.seq > seq``, oldest first.

        Parameters
        ----------
        seq
            Return only events after this seq (0: everything retained).
        kinds
            If given, only events whose kind is ``in kinds``.
        limit
            At most this many events (the oldest of those that match).
        """
        cdef long long since = _clock_arg("seq", seq)
        cdef object cap = check_limit(limit)
        cdef Py_ssize_t wanted = -1 if cap is None else <Py_ssize_t>min(cap, 1 << 62)
        cdef long long position, end
        cdef object verdict
        cdef bint collecting
        # ``kinds`` is asked about each kind first, which may run code (and
        # that code may publish); the events are then read with no code
        # running, so what comes back is every match from the oldest event
        # still retained on: the ring overwrites its oldest events first.
        cdef dict verdicts = {}
        cdef list out
        position = self._first_after(since)
        end = self._pos  # only events accepted before the call
        while True:
            if kinds is not None:
                self._judge_kinds(position, end, kinds, wanted, verdicts)  # may run code
            # The first allocation, before the ring is read: a collection it
            # runs (and any finalizer that publishes) happens before the read.
            out = []
            collecting = PyGC_Disable()  # the read allocates: no collection midway
            try:
                position = max(position, self._oldest_pos())
                while position < end:
                    if wanted >= 0 and len(out) >= wanted:
                        break
                    if kinds is not None:
                        verdict = verdicts.get(<object>self._ring.objs[
                            (position % self._max_events) * self._ostride + O_KIND
                        ])
                        if verdict is None:
                            break  # a kind not judged yet: judge from here, then read again
                        if verdict is False:
                            position += 1
                            continue
                    # never None: no code has run since the position was checked
                    out.append(self._event_at(position))
                    position += 1
                else:
                    return out
                if wanted >= 0 and len(out) >= wanted:
                    return out
            finally:
                if collecting:
                    PyGC_Enable()
            position = self._first_after(since)

    @cython.final
    cdef long long _first_after(self, long long since) noexcept:
        """Position of the oldest retained event with ``.seq > since`` (``_pos``
        if none): seqs grow with positions."""
        cdef long long low = self._oldest_pos()
        cdef long long high = self._pos
        cdef long long middle
        while low < high:
            middle = (low + high) >> 1
            if self._ring.meta[(middle % self._max_events) * M_STRIDE + M_SEQ] > since:
                high = middle
            else:
                low = middle + 1
        return low

    @cython.final
    cdef int _judge_kinds(
        self, long long position, long long end, object kinds, Py_ssize_t wanted,
        dict verdicts,
    ) except -1:
        """Ask ``kinds`` about the kind of each event from ``position`` to
        ``end``, once per kind, until ``wanted`` of them match; the answers go
        into ``verdicts``. Asking may run code that publishes: events it
        overwrites are passed over."""
        cdef Py_ssize_t matches = 0
        cdef object kind, verdict
        while position < end and (wanted < 0 or matches < wanted):
            if position < self._oldest_pos():
                position = self._oldest_pos()
                continue
            # owned by ``kind`` before ``kinds`` runs code that may overwrite the slot
            kind = <object>self._ring.objs[(position % self._max_events) * self._ostride + O_KIND]
            verdict = verdicts.get(kind)
            if verdict is None:
                verdict = verdicts[kind] = bool(kind in kinds)  # may run code
            if verdict is True:
                matches += 1
            position += 1
        return 0

    def latest_seq(self):
        """Seq of the newest accepted event (``0`` before the first)."""
        return self._seq

    def oldest_seq(self):
        """Seq of the oldest retained event (``0`` when none is retained)."""
        if self._pos == 0:
            return 0
        return self._ring.meta[(self._oldest_pos() % self._max_events) * M_STRIDE + M_SEQ]

    def pending_count(self):
        """Number of events waiting for :meth:`drain`."""
        return self._pending_count()

    def pending_events(self):
        """The events waiting for :meth:`drain`, in seq order."""
        # Allocated (and so any collection run) before the bus is looked at.
        cdef list out = []
        cdef long long position
        cdef bint collecting = PyGC_Disable()  # no collection while reading
        try:
            out.extend(self._spill)
            position = max(self._next_pos, self._oldest_pos())
            while position < self._pos:
                if not (self._done and position in self._done):
                    out.append(self._event_at(position))  # no code runs: never None
                position += 1
        finally:
            if collecting:
                PyGC_Enable()
        return out

    def __len__(self):
        return min(self._pos, <long long>self._max_events)

    def stats(self):
        """Counters of the bus.

        ``published``, ``dispatched`` (events drained), ``delivered`` (handler
        calls that returned), ``handler_errors``, ``overwritten``, ``pending``
        and ``retained``.
        """
        return {
            "published": self._published,
            "dispatched": self._dispatched,
            "delivered": self._delivered,
            "handler_errors": self._handler_errors,
            "overwritten": self._overwritten,
            "pending": self._pending_count(),
            "retained": min(self._pos, <long long>self._max_events),
        }


# -- publish's entry point ---------------------------------------------------
# publish() is called once per event, nearly always as publish(kind, payload=d)
# or with a few of its keyword-only fields. Cython's generic argument parser
# takes and releases a reference for all nine arguments and walks a generic
# keyword loop on every call; this METH_FASTCALL entry point matches the
# (interned) keyword names by identity and calls the implementation with
# borrowed references. Any other call — unknown, repeated or non-interned
# names, too many positional arguments — goes to the generic parser, so
# malformed calls fail exactly as before.

cdef object _N_TICK = "tick"
cdef object _N_DAY = "day"
cdef object _N_POLITY = "polity_id"
cdef object _N_WARD = "ward_id"
cdef object _N_ACTOR = "actor_id"
cdef object _N_SUBJECT = "subject_id"
cdef object _N_PAYLOAD = "payload"
cdef object _N_TAGS = "tags"
# The generic ``publish`` (Cython's parser), kept for the calls handled below.
cdef object _generic_publish = RingCore.__dict__["publish"]


cdef PyObject* _publish_fastcall(
    PyObject* self, PyObject** args, Py_ssize_t nargs, PyObject* kwnames
) except NULL:
    # Borrowed references only: the caller keeps every argument alive.
    cdef PyObject* none = <PyObject*>None
    cdef PyObject* values[9]
    cdef unsigned int given
    cdef Py_ssize_t count, i, index
    cdef PyObject* name
    cdef object result
    if nargs < 1 or nargs > 3:
        return _publish_slow(self, args, nargs, kwnames)
    if not (<RingCore>self)._enabled:
        # A disabled bus is a no-op: it does not even look at the arguments.
        result = 0
        _incref(<PyObject*>result)
        return <PyObject*>result
    values[0] = args[0]
    values[1] = args[1] if nargs > 1 else none
    values[2] = args[2] if nargs > 2 else none
    values[3] = none
    values[4] = none
    values[5] = none
    values[6] = none
    values[7] = none
    values[8] = <PyObject*>_EMPTY
    given = (1u << nargs) - 1
    if kwnames != NULL:
        count = _tuple_size(kwnames)
        for i in range(count):
            name = _tuple_get(<object>kwnames, i)
            if name == <PyObject*>_N_PAYLOAD:
                index = 7
            elif name == <PyObject*>_N_POLITY:
                index = 3
            elif name == <PyObject*>_N_SUBJECT:
                index = 6
            elif name == <PyObject*>_N_WARD:
                index = 4
            elif name == <PyObject*>_N_ACTOR:
                index = 5
            elif name == <PyObject*>_N_TAGS:
                index = 8
            elif name == <PyObject*>_N_TICK:
                index = 1
            elif name == <PyObject*>_N_DAY:
                index = 2
            else:
                return _publish_slow(self, args, nargs, kwnames)
            if given & (1u << index):
                return _publish_slow(self, args, nargs, kwnames)
            given |= 1u << index
            values[index] = args[nargs + i]
    result = (<RingCore>self)._publish(
        <object>values[0], <object>values[1], <object>values[2], <object>values[3],
        <object>values[4], <object>values[5], <object>values[6], <object>values[7],
        <object>values[8],
    )
    _incref(<PyObject*>result)
    return <PyObject*>result


cdef PyObject* _publish_slow(
    PyObject* self, PyObject** args, Py_ssize_t nargs, PyObject* kwnames
) except NULL:
    cdef Py_ssize_t i
    cdef Py_ssize_t count = 0 if kwnames == NULL else _tuple_size(kwnames)
    cdef tuple positional = tuple([<object>args[i] for i in range(nargs)])
    cdef dict keywords = {}
    for i in range(count):
        keywords[<object>_tuple_get(<object>kwnames, i)] = <object>args[nargs + i]
    cdef object result = _generic_publish(<object>self, *positional, **keywords)
    _incref(<PyObject*>result)
    return <PyObject*>result


cdef _MethodDef _publish_method
_publish_method.ml_name = "publish"
_publish_method.ml_meth = <void*>_publish_fastcall
_publish_method.ml_flags = METH_FASTCALL | METH_KEYWORDS
# The same text as the generic method's (and so the twin's) docstring.
cdef bytes _publish_doc = (
    "publish($self, /, kind, tick=None, day=None, *, polity_id=None, ward_id=None, "
    "actor_id=None, subject_id=None, payload=None, tags=(), priority=None)\n--\n\n"
    + _generic_publish.__doc__
).encode()
_publish_method.ml_doc = _publish_doc
PyDict_SetItem(
    <object>(<_TypeDict*>RingCore).tp_dict,
    "publish",
    PyDescr_NewMethod(<void*>RingCore, &_publish_method),
)
PyType_Modified(<void*>RingCore)


# -- journal lines -------------------------------------------------------------
# The journal's per-event work, done here so that a journal costs a few times
# the bus and not tens of times: the canonical JSON of an event record
# (exactly ``json.dumps(event.to_dict(), sort_keys=True, separators=(",", ":"),
# ensure_ascii=True)``), the SHA-256 chain over it, the lines of a drain in one
# buffer, and a reader that accepts a line only when it is exactly what the
# writer lays out. The twin has the same functions in Python (hashlib, json).

from libc.string cimport memcmp, strlen
from cpython.mem cimport PyMem_Realloc
from cpython.unicode cimport PyUnicode_Compare

cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>

    static const uint32_t rb_k256[64] = {
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
        0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
        0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
        0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
        0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
        0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
        0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

    typedef void (*rb_blocks_fn)(uint32_t *state, const unsigned char *data, size_t blocks);

    #define RB_ROTR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

    /* FIPS 180-4 SHA-256 compression, portable C. */
    static void rb_sha256_blocks_portable(uint32_t *s, const unsigned char *p, size_t blocks) {
        uint32_t w[64];
        while (blocks--) {
            int i;
            uint32_t a, b, c, d, e, f, g, h;
            for (i = 0; i < 16; i++)
                w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
                       (uint32_t)p[4 * i + 2] << 8 | (uint32_t)p[4 * i + 3];
            for (i = 16; i < 64; i++) {
                uint32_t s0 = RB_ROTR(w[i - 15], 7) ^ RB_ROTR(w[i - 15], 18) ^ (w[i - 15] >> 3);
                uint32_t s1 = RB_ROTR(w[i - 2], 17) ^ RB_ROTR(w[i - 2], 19) ^ (w[i - 2] >> 10);
                w[i] = w[i - 16] + s0 + w[i - 7] + s1;
            }
            a = s[0]; b = s[1]; c = s[2]; d = s[3]; e = s[4]; f = s[5]; g = s[6]; h = s[7];
            for (i = 0; i < 64; i++) {
                uint32_t t1 = h + (RB_ROTR(e, 6) ^ RB_ROTR(e, 11) ^ RB_ROTR(e, 25)) +
                              ((e & f) ^ (~e & g)) + rb_k256[i] + w[i];
                uint32_t t2 = (RB_ROTR(a, 2) ^ RB_ROTR(a, 13) ^ RB_ROTR(a, 22)) +
                              ((a & b) ^ (a & c) ^ (b & c));
                h = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
            }
            s[0] += a; s[1] += b; s[2] += c; s[3] += d; s[4] += e; s[5] += f; s[6] += g; s[7] += h;
            p += 64;
        }
    }

    #if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
    #include <immintrin.h>
    #include <cpuid.h>
    #define RB_SHA_X86 1

    /* The same compression with the x86 SHA extensions (Intel's published
       round structure: two rounds per sha256rnds2, message schedule with
       sha256msg1/sha256msg2). */
    __attribute__((target("sha,sse4.1,ssse3")))
    static void rb_sha256_blocks_shani(uint32_t *state, const unsigned char *data, size_t blocks) {
        __m128i STATE0, STATE1, MSG, TMP, ABEF, CDGH, M0, M1, M2, M3;
        const __m128i MASK = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
        TMP = _mm_loadu_si128((const __m128i *)&state[0]);
        STATE1 = _mm_loadu_si128((const __m128i *)&state[4]);
        TMP = _mm_shuffle_epi32(TMP, 0xB1);
        STATE1 = _mm_shuffle_epi32(STATE1, 0x1B);
        STATE0 = _mm_alignr_epi8(TMP, STATE1, 8);
        STATE1 = _mm_blend_epi16(STATE1, TMP, 0xF0);
        while (blocks--) {
            ABEF = STATE0;
            CDGH = STATE1;
            M0 = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(data + 0)), MASK);
            M1 = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(data + 16)), MASK);
            M2 = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(data + 32)), MASK);
            M3 = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(data + 48)), MASK);
    #define RB_ROUNDS(M, k)                                                         \\
            MSG = _mm_add_epi32(M, _mm_loadu_si128((const __m128i *)&rb_k256[k]));  \\
            STATE1 = _mm_sha256rnds2_epu32(STATE1, STATE0, MSG);                    \\
            MSG = _mm_shuffle_epi32(MSG, 0x0E);                                     \\
            STATE0 = _mm_sha256rnds2_epu32(STATE0, STATE1, MSG);
    #define RB_NEXT(A, B, C, D)                                                     \\
            A = _mm_sha256msg2_epu32(                                               \\
                _mm_add_epi32(_mm_sha256msg1_epu32(A, B), _mm_alignr_epi8(D, C, 4)), D);
            RB_ROUNDS(M0, 0)  RB_NEXT(M0, M1, M2, M3)
            RB_ROUNDS(M1, 4)  RB_NEXT(M1, M2, M3, M0)
            RB_ROUNDS(M2, 8)  RB_NEXT(M2, M3, M0, M1)
            RB_ROUNDS(M3, 12) RB_NEXT(M3, M0, M1, M2)
            RB_ROUNDS(M0, 16) RB_NEXT(M0, M1, M2, M3)
            RB_ROUNDS(M1, 20) RB_NEXT(M1, M2, M3, M0)
            RB_ROUNDS(M2, 24) RB_NEXT(M2, M3, M0, M1)
            RB_ROUNDS(M3, 28) RB_NEXT(M3, M0, M1, M2)
            RB_ROUNDS(M0, 32) RB_NEXT(M0, M1, M2, M3)
            RB_ROUNDS(M1, 36) RB_NEXT(M1, M2, M3, M0)
            RB_ROUNDS(M2, 40) RB_NEXT(M2, M3, M0, M1)
            RB_ROUNDS(M3, 44) RB_NEXT(M3, M0, M1, M2)
            RB_ROUNDS(M0, 48)
            RB_ROUNDS(M1, 52)
            RB_ROUNDS(M2, 56)
            RB_ROUNDS(M3, 60)
    #undef RB_ROUNDS
    #undef RB_NEXT
            STATE0 = _mm_add_epi32(STATE0, ABEF);
            STATE1 = _mm_add_epi32(STATE1, CDGH);
            data += 64;
        }
        TMP = _mm_shuffle_epi32(STATE0, 0x1B);
        STATE1 = _mm_shuffle_epi32(STATE1, 0xB1);
        STATE0 = _mm_blend_epi16(TMP, STATE1, 0xF0);
        STATE1 = _mm_alignr_epi8(STATE1, TMP, 8);
        _mm_storeu_si128((__m128i *)&state[0], STATE0);
        _mm_storeu_si128((__m128i *)&state[4], STATE1);
    }

    static int rb_cpu_has_sha(void) {
        unsigned int a, b, c, d;
        if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
        if (!(c & (1u << 9)) || !(c & (1u << 19))) return 0; /* SSSE3, SSE4.1 */
        if (__get_cpuid_max(0, 0) < 7) return 0;
        __cpuid_count(7, 0, a, b, c, d);
        return (b >> 29) & 1;
    }
    #endif

    static rb_blocks_fn rb_sha256_blocks = rb_sha256_blocks_portable;

    /* 1 when the SHA instructions are used, 0 for the portable code. */
    static int rb_sha256_setup(void) {
    #ifdef RB_SHA_X86
        if (rb_cpu_has_sha()) {
            rb_sha256_blocks = rb_sha256_blocks_shani;
            return 1;
        }
    #endif
        return 0;
    }

    typedef struct {
        uint32_t s[8];
        unsigned char buf[64];
        size_t fill;
        uint64_t total;
        rb_blocks_fn blocks;
    } rb_sha256;

    static void rb_sha256_init(rb_sha256 *h, int portable) {
        static const uint32_t iv[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                       0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
        memcpy(h->s, iv, sizeof(iv));
        h->fill = 0;
        h->total = 0;
        h->blocks = portable ? rb_sha256_blocks_portable : rb_sha256_blocks;
    }

    static void rb_sha256_update(rb_sha256 *h, const unsigned char *p, size_t n) {
        h->total += n;
        if (h->fill) {
            size_t take = 64 - h->fill;
            if (take > n) take = n;
            memcpy(h->buf + h->fill, p, take);
            h->fill += take;
            p += take;
            n -= take;
            if (h->fill < 64) return;
            h->blocks(h->s, h->buf, 1);
            h->fill = 0;
        }
        if (n >= 64) {
            h->blocks(h->s, p, n / 64);
            p += n & ~(size_t)63;
            n &= 63;
        }
        if (n) {
            memcpy(h->buf, p, n);
            h->fill = n;
        }
    }

    /* Finish and write the digest as 64 lowercase hex digits. */
    static void rb_sha256_hex(rb_sha256 *h, char *out) {
        static const char digits[] = "0123456789abcdef";
        uint64_t bits = h->total * 8;
        int i;
        h->buf[h->fill++] = 0x80;
        if (h->fill > 56) {
            memset(h->buf + h->fill, 0, 64 - h->fill);
            h->blocks(h->s, h->buf, 1);
            h->fill = 0;
        }
        memset(h->buf + h->fill, 0, 56 - h->fill);
        for (i = 0; i < 8; i++) h->buf[56 + i] = (unsigned char)(bits >> (56 - 8 * i));
        h->blocks(h->s, h->buf, 1);
        for (i = 0; i < 8; i++) {
            uint32_t word = h->s[i];
            int k;
            for (k = 7; k >= 0; k--) {
                out[8 * i + k] = digits[word & 15];
                word >>= 4;
            }
        }
    }

    /* sha256(a + b + c) as hex, for the chain: prev, record, closing brace. */
    static void rb_chain_hex(const char *a, size_t an, const char *b, size_t bn,
                             const char *c, size_t cn, char *out) {
        rb_sha256 h;
        rb_sha256_init(&h, 0);
        rb_sha256_update(&h, (const unsigned char *)a, an);
        rb_sha256_update(&h, (const unsigned char *)b, bn);
        rb_sha256_update(&h, (const unsigned char *)c, cn);
        rb_sha256_hex(&h, out);
    }

    /* JSON string escaping as json's ensure_ascii encoder does it. */
    static char *rb_escape(char *p, Py_UCS4 c) {
        static const char digits[] = "0123456789abcdef";
        *p++ = '\\\\';
        switch (c) {
        case '\\\\': *p++ = '\\\\'; return p;
        case '"': *p++ = '"'; return p;
        case '\\b': *p++ = 'b'; return p;
        case '\\f': *p++ = 'f'; return p;
        case '\\n': *p++ = 'n'; return p;
        case '\\r': *p++ = 'r'; return p;
        case '\\t': *p++ = 't'; return p;
        }
        if (c >= 0x10000) {
            Py_UCS4 high = 0xd800 | ((c - 0x10000) >> 10);
            *p++ = 'u';
            *p++ = digits[(high >> 12) & 15];
            *p++ = digits[(high >> 8) & 15];
            *p++ = digits[(high >> 4) & 15];
            *p++ = digits[high & 15];
            *p++ = '\\\\';
            c = 0xdc00 | ((c - 0x10000) & 0x3ff);
        }
        *p++ = 'u';
        *p++ = digits[(c >> 12) & 15];
        *p++ = digits[(c >> 8) & 15];
        *p++ = digits[(c >> 4) & 15];
        *p++ = digits[c & 15];
        return p;
    }

    /* 1 for the ASCII characters JSON writes as they are. */
    static const unsigned char rb_plain[128] = {
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
        1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
        1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
        1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1,
        1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
        1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0};

    /* Write str ``s`` quoted and escaped at ``p`` (room: 12 per char + 2). */
    static char *rb_put_str(char *p, PyObject *s) {
        Py_ssize_t n = PyUnicode_GET_LENGTH(s), i;
        int kind = PyUnicode_KIND(s);
        const void *data = PyUnicode_DATA(s);
        *p++ = '"';
        if (PyUnicode_IS_COMPACT_ASCII(s)) {
            const unsigned char *text = (const unsigned char *)data;
            for (i = 0; i < n && rb_plain[text[i]]; i++) p[i] = (char)text[i];
            p += i;
            for (; i < n; i++) {
                unsigned char c = text[i];
                if (c >= 0x20 && c <= 0x7e && c != '"' && c != '\\\\') *p++ = (char)c;
                else p = rb_escape(p, c);
            }
        } else if (kind == PyUnicode_1BYTE_KIND) {
            const unsigned char *text = (const unsigned char *)data;
            for (i = 0; i < n; i++) {
                unsigned char c = text[i];
                if (c >= 0x20 && c <= 0x7e && c != '"' && c != '\\\\') *p++ = (char)c;
                else p = rb_escape(p, c);
            }
        } else {
            for (i = 0; i < n; i++) {
                Py_UCS4 c = PyUnicode_READ(kind, data, i);
                if (c >= 0x20 && c <= 0x7e && c != '"' && c != '\\\\') *p++ = (char)c;
                else p = rb_escape(p, c);
            }
        }
        *p++ = '"';
        return p;
    }

    static char *rb_put_ll(char *p, long long v) {
        char tmp[24];
        int n = 0;
        unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
        if (v < 0) *p++ = '-';
        do { tmp[n++] = (char)('0' + u % 10); u /= 10; } while (u);
        while (n) *p++ = tmp[--n];
        return p;
    }

    /* -- an event record in one pass ---------------------------------------------
       rb_value_bound gives an upper bound on the bytes of a value's JSON, or -1
       when the value is not one of the exact types handled here (then the
       caller takes the general path). For values it accepts, rb_put_value
       runs no Python code and creates no Python object. */

    #define RB_MAX_DEPTH 32
    #define RB_TUPLE_ITEMS(t) (((PyTupleObject *)(t))->ob_item)

    static Py_ssize_t rb_value_bound(PyObject *v, int depth) {
        PyTypeObject *type = Py_TYPE(v);
        if (v == Py_None || type == &PyBool_Type) return 5;
        if (type == &PyUnicode_Type) return 12 * PyUnicode_GET_LENGTH(v) + 2;
        if (type == &PyLong_Type) {
            int overflow = 0;
            long long value;
            if (RINGBUS_INT_COMPACT(v)) return 21;
            value = PyLong_AsLongLongAndOverflow(v, &overflow);
            if (overflow || (value == -1 && PyErr_Occurred())) {
                PyErr_Clear();
                return -1;
            }
            return 21;
        }
        if (type == &PyFloat_Type) return isfinite(PyFloat_AS_DOUBLE(v)) ? 32 : -1;
        if (type == &PyTuple_Type && depth < RB_MAX_DEPTH) {
            Py_ssize_t n = PyTuple_GET_SIZE(v), i, total = 2;
            for (i = 0; i < n; i++) {
                Py_ssize_t one = rb_value_bound(PyTuple_GET_ITEM(v, i), depth + 1);
                if (one < 0) return -1;
                total += one + 1;
            }
            return total;
        }
        return -1;
    }

    /* Code point order of two exact str (what sorted() on the keys does). */
    static int rb_str_order(PyObject *a, PyObject *b) {
        if (PyUnicode_IS_COMPACT_ASCII(a) && PyUnicode_IS_COMPACT_ASCII(b)) {
            Py_ssize_t na = PyUnicode_GET_LENGTH(a), nb = PyUnicode_GET_LENGTH(b);
            Py_ssize_t n = na < nb ? na : nb, i;
            const unsigned char *x = (const unsigned char *)PyUnicode_DATA(a);
            const unsigned char *y = (const unsigned char *)PyUnicode_DATA(b);
            for (i = 0; i < n; i++)
                if (x[i] != y[i]) return x[i] < y[i] ? -1 : 1;
            return na < nb ? -1 : na > nb;
        }
        return PyUnicode_Compare(a, b);
    }

    static char *rb_put_lit(char *p, const char *text, size_t n) {
        memcpy(p, text, n);
        return p + n;
    }

    /* NULL with an exception set when float formatting fails (memory). */
    static char *rb_put_value(char *p, PyObject *v) {
        PyTypeObject *type = Py_TYPE(v);
        if (v == Py_None) return rb_put_lit(p, "null", 4);
        if (v == Py_True) return rb_put_lit(p, "true", 4);
        if (v == Py_False) return rb_put_lit(p, "false", 5);
        if (type == &PyUnicode_Type) return rb_put_str(p, v);
        if (type == &PyLong_Type) {
            int overflow = 0;
            return rb_put_ll(p, PyLong_AsLongLongAndOverflow(v, &overflow));
        }
        if (type == &PyFloat_Type) {
            char *text = PyOS_double_to_string(PyFloat_AS_DOUBLE(v), 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
            size_t n;
            if (text == NULL) return NULL;
            n = strlen(text);
            memcpy(p, text, n);
            PyMem_Free(text);
            return p + n;
        }
        {
            Py_ssize_t n = PyTuple_GET_SIZE(v), i;
            *p++ = '[';
            for (i = 0; i < n; i++) {
                if (i) *p++ = ',';
                p = rb_put_value(p, PyTuple_GET_ITEM(v, i));
                if (p == NULL) return NULL;
            }
            *p++ = ']';
            return p;
        }
    }

    static Py_ssize_t rb_id_bound(PyObject *v) {
        if (v == Py_None) return 4;
        if (Py_TYPE(v) != &PyUnicode_Type) return -1;
        return 12 * PyUnicode_GET_LENGTH(v) + 2;
    }

    static char *rb_put_id(char *p, PyObject *v) {
        return v == Py_None ? rb_put_lit(p, "null", 4) : rb_put_str(p, v);
    }

    /* Bound on the record's bytes; -1: a field or value needs the general path.
       ``ids``: actor, polity, subject, ward. ``flat``: keys and values. */
    static Py_ssize_t rb_event_bound(PyObject *kind, PyObject **ids, PyObject **flat,
                                     Py_ssize_t pairs, PyObject *tags) {
        Py_ssize_t total = 200, i, one;
        if (pairs > 64 || Py_TYPE(kind) != &PyUnicode_Type || Py_TYPE(tags) != &PyTuple_Type)
            return -1;
        total += 12 * PyUnicode_GET_LENGTH(kind);
        for (i = 0; i < 4; i++) {
            if ((one = rb_id_bound(ids[i])) < 0) return -1;
            total += one;
        }
        for (i = 0; i < pairs; i++) {
            if (Py_TYPE(flat[2 * i]) != &PyUnicode_Type) return -1;
            if ((one = rb_value_bound(flat[2 * i + 1], 1)) < 0) return -1;
            total += 12 * PyUnicode_GET_LENGTH(flat[2 * i]) + 4 + one;
        }
        for (i = 0; i < PyTuple_GET_SIZE(tags); i++) {
            PyObject *tag = PyTuple_GET_ITEM(tags, i);
            if (Py_TYPE(tag) != &PyUnicode_Type) return -1;
            total += 12 * PyUnicode_GET_LENGTH(tag) + 3;
        }
        return total;
    }

    /* The record of an event that rb_event_bound accepted, keys in sorted order. */
    static char *rb_put_event(char *p, long long seq, long long tick, long long day,
                              PyObject *kind, PyObject **ids, PyObject **flat,
                              Py_ssize_t pairs, PyObject *tags) {
        Py_ssize_t order[64], i, j, n;
        for (i = 0; i < pairs; i++) {
            j = i;
            while (j > 0 && rb_str_order(flat[2 * order[j - 1]], flat[2 * i]) > 0) {
                order[j] = order[j - 1];
                j--;
            }
            order[j] = i;
        }
        p = rb_put_lit(p, "{\\"actor_id\\":", 12);
        p = rb_put_id(p, ids[0]);
        p = rb_put_lit(p, ",\\"day\\":", 7);
        p = rb_put_ll(p, day);
        p = rb_put_lit(p, ",\\"kind\\":", 8);
        p = rb_put_str(p, kind);
        p = rb_put_lit(p, ",\\"payload\\":{", 12);
        for (i = 0; i < pairs; i++) {
            if (i) *p++ = ',';
            p = rb_put_str(p, flat[2 * order[i]]);
            *p++ = ':';
            p = rb_put_value(p, flat[2 * order[i] + 1]);
            if (p == NULL) return NULL;
        }
        p = rb_put_lit(p, "},\\"polity_id\\":", 14);
        p = rb_put_id(p, ids[1]);
        p = rb_put_lit(p, ",\\"seq\\":", 7);
        p = rb_put_ll(p, seq);
        p = rb_put_lit(p, ",\\"subject_id\\":", 14);
        p = rb_put_id(p, ids[2]);
        p = rb_put_lit(p, ",\\"tags\\":[", 9);
        n = PyTuple_GET_SIZE(tags);
        for (i = 0; i < n; i++) {
            if (i) *p++ = ',';
            p = rb_put_str(p, PyTuple_GET_ITEM(tags, i));
        }
        p = rb_put_lit(p, "],\\"tick\\":", 9);
        p = rb_put_ll(p, tick);
        p = rb_put_lit(p, ",\\"ward_id\\":", 11);
        p = rb_put_id(p, ids[3]);
        *p++ = '}';
        return p;
    }

    /* -- reading a line the writer laid out ------------------------------------
       Each rb_scan_* takes the text at *pos and returns 1 (accepted, *pos past
       it), 0 (not in canonical form) or -1 (an error is set). */

    static int rb_hexval(char c) {
        if (c >= '0' && c <= '9') return c - '0';
        if (c >= 'a' && c <= 'f') return c - 'a' + 10;
        return -1;
    }

    /* A canonical JSON string; ``plain``: no escapes at all. */
    static int rb_scan_str(const char *s, Py_ssize_t n, Py_ssize_t *pos, int plain) {
        Py_ssize_t i = *pos;
        if (i >= n || s[i] != '"') return 0;
        i++;
        while (i < n) {
            unsigned char c = (unsigned char)s[i];
            if (c == '"') { *pos = i + 1; return 1; }
            if (c < 0x20 || c > 0x7e) return 0;
            if (c != '\\\\') { i++; continue; }
            if (plain || i + 1 >= n) return 0;
            c = (unsigned char)s[i + 1];
            if (c == '"' || c == '\\\\' || c == 'b' || c == 'f' || c == 'n' || c == 'r' || c == 't') {
                i += 2;
                continue;
            }
            if (c != 'u' || i + 6 > n) return 0;
            {
                int d0 = rb_hexval(s[i + 2]), d1 = rb_hexval(s[i + 3]);
                int d2 = rb_hexval(s[i + 4]), d3 = rb_hexval(s[i + 5]);
                unsigned int v;
                if (d0 < 0 || d1 < 0 || d2 < 0 || d3 < 0) return 0;
                v = (unsigned int)(d0 << 12 | d1 << 8 | d2 << 4 | d3);
                if (v >= 0x20 && v < 0x7f) return 0;
                if (v == 8 || v == 9 || v == 10 || v == 12 || v == 13) return 0;
            }
            i += 6;
        }
        return 0;
    }

    static int rb_scan_lit(const char *s, Py_ssize_t n, Py_ssize_t *pos, const char *lit) {
        Py_ssize_t len = (Py_ssize_t)strlen(lit);
        if (*pos + len > n || memcmp(s + *pos, lit, (size_t)len) != 0) return 0;
        *pos += len;
        return 1;
    }

    /* A canonical int in [lo, 2**63 - 1] (lo is 0 or -2**63). */
    static int rb_scan_int(const char *s, Py_ssize_t n, Py_ssize_t *pos, int allow_negative,
                           long long *out) {
        Py_ssize_t i = *pos;
        int negative = 0;
        unsigned long long value = 0, limit;
        if (i < n && s[i] == '-') {
            if (!allow_negative) return 0;
            negative = 1;
            i++;
        }
        if (i >= n || s[i] < '0' || s[i] > '9') return 0;
        if (s[i] == '0') {
            if (negative) return 0; /* "-0" is not canonical */
            i++;
        } else {
            limit = negative ? 9223372036854775808ULL : 9223372036854775807ULL;
            while (i < n && s[i] >= '0' && s[i] <= '9') {
                unsigned int digit = (unsigned int)(s[i] - '0');
                if (value > (limit - digit) / 10) return 0;
                value = value * 10 + digit;
                i++;
            }
        }
        if (i < n && (s[i] == '.' || s[i] == 'e' || s[i] == 'E')) return 0;
        *out = negative ? (long long)(0ULL - value) : (long long)value;
        *pos = i;
        return 1;
    }

    /* A payload value: null, true, false, an int, a finite float written as
       repr() writes it, or a string. */
    static int rb_scan_value(const char *s, Py_ssize_t n, Py_ssize_t *pos) {
        Py_ssize_t i = *pos, start = *pos;
        long long ignored;
        char c;
        if (i >= n) return 0;
        c = s[i];
        if (c == '"') return rb_scan_str(s, n, pos, 0);
        if (c == 'n') return rb_scan_lit(s, n, pos, "null");
        if (c == 't') return rb_scan_lit(s, n, pos, "true");
        if (c == 'f') return rb_scan_lit(s, n, pos, "false");
        if (c != '-' && (c < '0' || c > '9')) return 0;
        if (c == '-') i++;
        if (i >= n || s[i] < '0' || s[i] > '9') return 0;
        while (i < n && s[i] >= '0' && s[i] <= '9') i++;
        if (i < n && (s[i] == '.' || s[i] == 'e' || s[i] == 'E')) {
            char number[64], *end = NULL, *text;
            double x;
            int same;
            if (s[i] == '.') {
                i++;
                if (i >= n || s[i] < '0' || s[i] > '9') return 0;
                while (i < n && s[i] >= '0' && s[i] <= '9') i++;
            }
            if (i < n && (s[i] == 'e' || s[i] == 'E')) {
                i++;
                if (i < n && (s[i] == '+' || s[i] == '-')) i++;
                if (i >= n || s[i] < '0' || s[i] > '9') return 0;
                while (i < n && s[i] >= '0' && s[i] <= '9') i++;
            }
            if (i - start >= (Py_ssize_t)sizeof(number)) return 0; /* repr is shorter */
            memcpy(number, s + start, (size_t)(i - start));
            number[i - start] = 0;
            x = PyOS_string_to_double(number, &end, NULL);
            if (x == -1.0 && PyErr_Occurred()) return -1;
            if (end != number + (i - start) || !isfinite(x)) return 0;
            text = PyOS_double_to_string(x, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
            if (text == NULL) return -1;
            same = strlen(text) == (size_t)(i - start) && memcmp(text, number, (size_t)(i - start)) == 0;
            PyMem_Free(text);
            if (!same) return 0;
            *pos = i;
            return 1;
        }
        return rb_scan_int(s, n, pos, 1, &ignored);
    }

    static int rb_scan_id(const char *s, Py_ssize_t n, Py_ssize_t *pos) {
        if (*pos < n && s[*pos] == 'n') return rb_scan_lit(s, n, pos, "null");
        return rb_scan_str(s, n, pos, 0);
    }

    #define RB_TRY(call) do { int rb_ok_ = (call); if (rb_ok_ <= 0) return rb_ok_; } while (0)

    /* The record part of an event line (everything before ',"hash":"'):
       exactly its canonical JSON. */
    static int rb_scan_event(const char *s, Py_ssize_t n, long long clock[3],
                             Py_ssize_t kind[2]) {
        Py_ssize_t pos = 0, key_start = -1, key_end = -1;
        RB_TRY(rb_scan_lit(s, n, &pos, "{\\"actor_id\\":"));
        RB_TRY(rb_scan_id(s, n, &pos));
        RB_TRY(rb_scan_lit(s, n, &pos, ",\\"day\\":"));
        RB_TRY(rb_scan_int(s, n, &pos, 0, &clock[2]));
        RB_TRY(rb_scan_lit(s, n, &pos, ",\\"kind\\":"));
        kind[0] = pos + 1;
        RB_TRY(rb_scan_str(s, n, &pos, 1));
        kind[1] = pos - 1;
        if (kind[1] == kind[0]) return 0;
        RB_TRY(rb_scan_lit(s, n, &pos, ",\\"payload\\":{"));
        if (pos < n && s[pos] != '}') {
            for (;;) {
                Py_ssize_t start = pos + 1, end, common;
                int order;
                RB_TRY(rb_scan_str(s, n, &pos, 1));
                end = pos - 1;
                if (key_start >= 0) {
                    /* keys sorted, no duplicates: plain ASCII compares bytewise */
                    common = (end - start) < (key_end - key_start) ? end - start : key_end - key_start;
                    order = memcmp(s + key_start, s + start, (size_t)common);
                    if (order > 0 || (order == 0 && (end - start) <= (key_end - key_start))) return 0;
                }
                key_start = start;
                key_end = end;
                RB_TRY(rb_scan_lit(s, n, &pos, ":"));
                RB_TRY(rb_scan_value(s, n, &pos));
                if (pos < n && s[pos] == ',') { pos++; continue; }
                break;
            }
        }
        RB_TRY(rb_scan_lit(s, n, &pos, "},\\"polity_id\\":"));
        RB_TRY(rb_scan_id(s, n, &pos));
        RB_TRY(rb_scan_lit(s, n, &pos, ",\\"seq\\":"));
        RB_TRY(rb_scan_int(s, n, &pos, 0, &clock[0]));
        RB_TRY(rb_scan_lit(s, n, &pos, ",\\"subject_id\\":"));
        RB_TRY(rb_scan_id(s, n, &pos));
        RB_TRY(rb_scan_lit(s, n, &pos, ",\\"tags\\":["));
        if (pos < n && s[pos] != ']') {
            for (;;) {
                RB_TRY(rb_scan_str(s, n, &pos, 0));
                if (pos < n && s[pos] == ',') { pos++; continue; }
                break;
            }
        }
        RB_TRY(rb_scan_lit(s, n, &pos, "],\\"tick\\":"));
        RB_TRY(rb_scan_int(s, n, &pos, 0, &clock[1]));
        RB_TRY(rb_scan_lit(s, n, &pos, ",\\"ward_id\\":"));
        RB_TRY(rb_scan_id(s, n, &pos));
        return pos == n;
    }
    #undef RB_TRY
    """
    ctypedef struct rb_sha256:
        pass
    int rb_sha256_setup() noexcept
    void rb_sha256_init(rb_sha256* h, int portable) noexcept
    void rb_sha256_update(rb_sha256* h, const unsigned char* p, size_t n) noexcept
    void rb_sha256_hex(rb_sha256* h, char* out) noexcept
    void rb_chain_hex(
        const char* a, size_t an, const char* b, size_t bn, const char* c, size_t cn, char* out
    ) noexcept
    char* rb_put_str(char* p, PyObject* s) noexcept
    PyObject** RB_TUPLE_ITEMS(object t) noexcept
    Py_ssize_t rb_event_bound(
        PyObject* kind, PyObject** ids, PyObject** flat, Py_ssize_t pairs, PyObject* tags
    ) noexcept
    char* rb_put_event(
        char* p, long long seq, long long tick, long long day, PyObject* kind, PyObject** ids,
        PyObject** flat, Py_ssize_t pairs, PyObject* tags
    ) noexcept
    char* rb_put_ll(char* p, long long v) noexcept
    int rb_scan_event(const char* s, Py_ssize_t n, long long* clock, Py_ssize_t* kind) except -1
    char* PyOS_double_to_string(double val, char format_code, int precision, int flags, int* ptype) except NULL
    int Py_DTSF_ADD_DOT_0

#: Whether SHA-256 runs on the CPU's SHA instructions (else portable C).
cdef bint _sha_accelerated = rb_sha256_setup()


cdef struct _Out:
    char* data
    Py_ssize_t size
    Py_ssize_t cap


cdef int _reserve(_Out* out, Py_ssize_t extra) except -1:
    """Make room for ``extra`` more bytes (allocates no Python object)."""
    cdef Py_ssize_t need = out.size + extra
    cdef Py_ssize_t cap = out.cap if out.cap else 1024
    cdef char* data
    if need <= out.cap:
        return 0
    while cap < need:
        cap *= 2
    data = <char*>PyMem_Realloc(out.data, cap)
    if data == NULL:
        raise MemoryError()
    out.data = data
    out.cap = cap
    return 0


cdef inline int _put(_Out* out, const char* text, Py_ssize_t size) except -1:
    if out.size + size > out.cap:
        _reserve(out, size)
    memcpy(out.data + out.size, text, size)
    out.size += size
    return 0


cdef inline int _put_str(_Out* out, object text) except -1:
    """An exact ``str``, quoted and escaped."""
    _reserve(out, 12 * PyUnicode_GET_LENGTH(text) + 2)
    out.size = rb_put_str(out.data + out.size, <PyObject*>text) - out.data
    return 0


cdef inline int _put_ll(_Out* out, long long value) except -1:
    if out.size + 24 > out.cap:
        _reserve(out, 24)
    out.size = rb_put_ll(out.data + out.size, value) - out.data
    return 0


cdef inline int _put_id(_Out* out, object value) except -1:
    if value is None:
        return _put(out, "null", 4)
    return _put_str(out, value)


def _refuse_value(value):
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


# What json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
# allow_nan=False) does, made once: values this module does not encode itself
# (subclasses, dicts, non-finite floats, ints beyond 64 bits) go through it, so
# they are written, or refused, exactly as json does.
cdef object _json_encoder = __import__("json.encoder").encoder.c_make_encoder(
    None,
    _refuse_value,
    __import__("json.encoder").encoder.encode_basestring_ascii,
    None,
    ":",
    ",",
    True,
    False,
    False,
)

cdef enum:
    _MAX_DEPTH = 32  # deeper values go through json (and its recursion check)


cdef int _put_json(_Out* out, object value) except -1:
    cdef str text = "".join(_json_encoder(value, 0))
    cdef bytes data = text.encode("ascii")
    return _put(out, data, len(data))


cdef int _put_value(_Out* out, object value, int depth) except -1:
    """Canonical JSON of ``value`` (the caller owns a reference to it)."""
    cdef object kind = type(value)
    cdef int overflow = 0
    cdef long long number
    cdef double real
    cdef char* text
    cdef tuple items
    cdef Py_ssize_t i
    if value is None:
        return _put(out, "null", 4)
    if value is True:
        return _put(out, "true", 4)
    if value is False:
        return _put(out, "false", 5)
    if kind is str:
        return _put_str(out, value)
    if kind is int:
        number = PyLong_AsLongLongAndOverflow(value, &overflow)
        if overflow:
            return _put_json(out, value)
        return _put_ll(out, number)
    if kind is float:
        real = _float_value(<PyObject*>value)
        if not isfinite(real):
            return _put_json(out, value)
        text = PyOS_double_to_string(real, c"r", 0, Py_DTSF_ADD_DOT_0, NULL)
        try:
            _put(out, text, strlen(text))
        finally:
            PyMem_Free(text)
        return 0
    if (kind is tuple or kind is list) and depth < _MAX_DEPTH:
        items = tuple(value)  # owned: a list cannot change under us
        _put(out, "[", 1)
        for i in range(len(items)):
            if i:
                _put(out, ",", 1)
            _put_value(out, items[i], depth + 1)
        return _put(out, "]", 1)
    return _put_json(out, value)


cdef int _put_event(_Out* out, WorldEvent event) except -1:
    """The canonical JSON of ``event.to_dict()``: its keys in sorted order.

    An event of the usual kind (every value of an exact type the C encoder
    handles) is written in one pass with one reservation; a view's payload
    is read in its ring slot. The pointers are borrowed: from reading them
    to the end of ``rb_put_event`` nothing runs Python code or creates a
    Python object (``_reserve`` and float formatting use PyMem only).
    """
    cdef PyObject* ids[4]
    cdef PyObject** pairs_at
    cdef Py_ssize_t pairs, bound
    cdef tuple flat
    cdef _Storage storage
    cdef char* end
    ids[0] = <PyObject*>event._actor_id
    ids[1] = <PyObject*>event._polity_id
    ids[2] = <PyObject*>event._subject_id
    ids[3] = <PyObject*>event._ward_id
    if event._flat is not None:
        pairs_at = RB_TUPLE_ITEMS(event._flat)
        pairs = len(event._flat) // 2
    else:
        storage = event._view_of
        if storage is None or storage.meta[event._slot * M_STRIDE + M_SEQ] != event._seq:
            return _put_event_general(out, event)
        pairs_at = storage.objs + event._slot * storage.stride + O_PAIRS
        pairs = storage.meta[event._slot * M_STRIDE + M_NPAIRS]
    bound = rb_event_bound(<PyObject*>event._kind, ids, pairs_at, pairs, <PyObject*>event._tags)
    if bound < 0:
        return _put_event_general(out, event)
    _reserve(out, bound)
    end = rb_put_event(
        out.data + out.size, event._seq, event._tick, event._day, <PyObject*>event._kind, ids,
        pairs_at, pairs, <PyObject*>event._tags,
    )
    if end == NULL:
        raise MemoryError()
    out.size = end - out.data
    return 0


cdef int _put_event_general(_Out* out, WorldEvent event) except -1:
    """:func:`_put_event` for any event: owned references, value by value."""
    cdef tuple flat = event._payload_flat()  # owned, keys and values alternating
    cdef tuple tags = event._tags
    cdef Py_ssize_t pairs = len(flat) // 2
    cdef Py_ssize_t order[64]
    cdef Py_ssize_t i, j, index
    for i in range(pairs):
        if type(flat[2 * i]) is not str:
            raise TypeError("payload keys must be str")
    # Insertion sort of the keys (at most 64, often already in order).
    for i in range(pairs):
        index = i
        j = i
        while j > 0 and PyUnicode_Compare(flat[2 * order[j - 1]], flat[2 * index]) > 0:
            order[j] = order[j - 1]
            j -= 1
        order[j] = index
    _put(out, '{"actor_id":', 12)
    _put_id(out, event._actor_id)
    _put(out, ',"day":', 7)
    _put_ll(out, event._day)
    _put(out, ',"kind":', 8)
    _put_str(out, event._kind)
    _put(out, ',"payload":{', 12)
    for i in range(pairs):
        if i:
            _put(out, ",", 1)
        _put_str(out, flat[2 * order[i]])
        _put(out, ":", 1)
        _put_value(out, flat[2 * order[i] + 1], 1)
    _put(out, '},"polity_id":', 14)
    _put_id(out, event._polity_id)
    _put(out, ',"seq":', 7)
    _put_ll(out, event._seq)
    _put(out, ',"subject_id":', 14)
    _put_id(out, event._subject_id)
    _put(out, ',"tags":[', 9)
    for i in range(len(tags)):
        if i:
            _put(out, ",", 1)
        _put_str(out, tags[i])
    _put(out, '],"tick":', 9)
    _put_ll(out, event._tick)
    _put(out, ',"ward_id":', 11)
    _put_id(out, event._ward_id)
    return _put(out, "}", 1)


cdef WorldEvent _as_event(object event):
    """``event`` itself, or a WorldEvent of this core built from its fields."""
    if type(event) is WorldEvent:
        return <WorldEvent>event
    return WorldEvent(
        event.seq,
        event.tick,
        event.day,
        event.kind,
        event.polity_id,
        event.ward_id,
        event.actor_id,
        event.subject_id,
        event.payload,
        event.tags,
    )


cdef str _out_text(_Out* out, Py_ssize_t start):
    return (out.data + start)[:out.size - start].decode("ascii")


def encode_event(event):
    """Return the canonical JSON of an event's record, as the journal writes it.

    Exactly ``json.dumps(event.to_dict(), sort_keys=True, separators=(",", ":"),
    ensure_ascii=True)``, without building the dict.
    """
    cdef WorldEvent owned = _as_event(event)
    cdef _Out out
    out.data = NULL
    out.size = 0
    out.cap = 0
    try:
        _put_event(&out, owned)
        return _out_text(&out, 0)
    finally:
        PyMem_Free(out.data)


def encode_value(value):
    """Return the canonical JSON of a payload value.

    Exactly ``json.dumps(value, sort_keys=True, separators=(",", ":"),
    ensure_ascii=True, allow_nan=False)``, with its errors.
    """
    cdef _Out out
    out.data = NULL
    out.size = 0
    out.cap = 0
    try:
        _put_value(&out, value, 0)
        return _out_text(&out, 0)
    finally:
        PyMem_Free(out.data)


def sha256_hex(data, portable=False):
    """Return the SHA-256 of ``data`` (bytes) as 64 lowercase hex digits.

    ``portable`` uses the portable implementation even where the compiled
    core would use the CPU's SHA instructions (the twin always uses
    :mod:`hashlib`); both give the same digest.
    """
    if type(data) is not bytes:
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    cdef const unsigned char[::1] view = data
    cdef rb_sha256 state
    cdef char digest[64]
    rb_sha256_init(&state, 1 if portable else 0)
    if view.shape[0]:
        rb_sha256_update(&state, &view[0], view.shape[0])
    rb_sha256_hex(&state, digest)
    return digest[:64].decode("ascii")


cdef class JournalChain:
    """The per-event work of a journal: encode, chain, buffer.

    :meth:`append` turns an event into its journal line (the canonical JSON
    of its record, then ``"hash"``: SHA-256 of the previous line's hash and
    those bytes) and adds it to a buffer that the journal writes with one
    ``write`` per drain; it keeps the chain head, the last seq, tick and day
    and the counts that place checkpoints.

    Parameters
    ----------
    chained
        Add a ``"hash"`` member to every line.
    checkpoint_every
        Call ``checkpoint`` once this many events follow the last mark
        (``0``: never).
    checkpoint_on_day
        Set :attr:`day_ended` when an event of kind ``day_kind`` or of
        another day than the last mark is appended.
    day_kind
        The kind that ends a day.
    checkpoint
        Called without arguments when a checkpoint is due; it adds the mark
        with :meth:`add_text`.
    """

    cdef _Out _out
    cdef char _head[64]
    cdef Py_ssize_t _head_size
    cdef readonly bint chained
    cdef public long long checkpoint_every
    cdef public bint checkpoint_on_day
    cdef str _day_kind
    cdef object _checkpoint
    cdef bint _has_last
    cdef long long _last_seq
    cdef long long _last_tick
    cdef long long _last_day
    cdef bint _has_mark_day
    cdef long long _mark_day
    cdef public long long events
    cdef public long long appended
    cdef public long long since_mark
    cdef public bint day_ended
    # The state at the last commit(), restored by rollback().
    cdef char _saved_head[64]
    cdef Py_ssize_t _saved_head_size
    cdef bint _saved_has_last
    cdef long long _saved_last[3]
    cdef bint _saved_has_mark_day
    cdef long long _saved_mark_day
    cdef long long _saved_counts[3]

    def __cinit__(self):
        self._out.data = NULL
        self._out.size = 0
        self._out.cap = 0

    def __init__(self, chained, checkpoint_every, checkpoint_on_day, day_kind, checkpoint):
        if not callable(checkpoint):
            raise TypeError("checkpoint must be callable")
        self.chained = bool(chained)
        self.checkpoint_every = check_non_negative("checkpoint_every", checkpoint_every)
        self.checkpoint_on_day = bool(checkpoint_on_day)
        self._day_kind = check_kind(day_kind)
        self._checkpoint = checkpoint
        self._head_size = 0

    def __dealloc__(self):
        PyMem_Free(self._out.data)
        self._out.data = NULL

    @property
    def last_hash(self):
        """The chain head: the last line's hash (or the genesis), ``""`` if none."""
        return self._head[:self._head_size].decode("ascii")

    @last_hash.setter
    def last_hash(self, value):
        if type(value) is not str or len(value) not in (0, 64) or not value.isascii():
            raise ValueError("a chain hash is 64 hex digits (or empty before the first line)")
        data = value.encode("ascii")
        memcpy(self._head, <const char*>data, len(data))
        self._head_size = len(data)

    @property
    def last_seq(self):
        """The seq of the last event, or ``None``."""
        return self._last_seq if self._has_last else None

    @property
    def last_tick(self):
        """The tick of the last event, or ``None``."""
        return self._last_tick if self._has_last else None

    @property
    def last_day(self):
        """The day of the last event, or ``None``."""
        return self._last_day if self._has_last else None

    def set_last(self, seq, tick, day):
        """Set the last event's seq, tick and day (all ``None``: no event yet)."""
        if seq is None:
            self._has_last = False
            self._last_seq = self._last_tick = self._last_day = 0
            return
        cdef long long seq_value = check_non_negative("seq", seq)
        cdef long long tick_value = check_non_negative("tick", tick)
        cdef long long day_value = check_non_negative("day", day)
        self._last_seq = seq_value
        self._last_tick = tick_value
        self._last_day = day_value
        self._has_last = True

    @property
    def mark_day(self):
        """The day of the last mark (or first event after it), or ``None``."""
        return self._mark_day if self._has_mark_day else None

    @mark_day.setter
    def mark_day(self, value):
        if value is None:
            self._has_mark_day = False
            self._mark_day = 0
        else:
            self._mark_day = check_non_negative("day", value)
            self._has_mark_day = True

    @property
    def pending_size(self):
        """Bytes of lines not yet taken."""
        return self._out.size

    def pending(self):
        """Return the lines not yet taken, as bytes (they stay until :meth:`clear`)."""
        return self._out.data[:self._out.size] if self._out.size else b""

    def clear(self):
        """Drop the lines not yet taken."""
        self._out.size = 0

    cdef int _close_line(self, Py_ssize_t start) except -1:
        """Chain the record at ``start`` (it ends with ``}``) and end its line."""
        cdef char digest[64]
        if not self.chained:
            return _put(&self._out, "\n", 1)
        rb_chain_hex(
            self._head, self._head_size, self._out.data + start, self._out.size - start,
            NULL, 0, digest,
        )
        self._out.size -= 1
        _reserve(&self._out, 77)
        memcpy(self._out.data + self._out.size, ',"hash":"', 9)
        memcpy(self._out.data + self._out.size + 9, digest, 64)
        memcpy(self._out.data + self._out.size + 73, '"}\n', 3)
        self._out.size += 76
        memcpy(self._head, digest, 64)
        self._head_size = 64
        return 0

    def commit(self):
        """Drop the lines not yet taken (they were written) and remember the state."""
        self._out.size = 0
        memcpy(self._saved_head, self._head, 64)
        self._saved_head_size = self._head_size
        self._saved_has_last = self._has_last
        self._saved_last[0] = self._last_seq
        self._saved_last[1] = self._last_tick
        self._saved_last[2] = self._last_day
        self._saved_has_mark_day = self._has_mark_day
        self._saved_mark_day = self._mark_day
        self._saved_counts[0] = self.events
        self._saved_counts[1] = self.since_mark
        self._saved_counts[2] = self.appended

    def rollback(self):
        """Drop the lines not yet taken and return to the state of the last :meth:`commit`."""
        self._out.size = 0
        memcpy(self._head, self._saved_head, 64)
        self._head_size = self._saved_head_size
        self._has_last = self._saved_has_last
        self._last_seq = self._saved_last[0]
        self._last_tick = self._saved_last[1]
        self._last_day = self._saved_last[2]
        self._has_mark_day = self._saved_has_mark_day
        self._mark_day = self._saved_mark_day
        self.events = self._saved_counts[0]
        self.since_mark = self._saved_counts[1]
        self.appended = self._saved_counts[2]
        self.day_ended = False

    def mark_text(self, mark):
        """Return the canonical JSON of a checkpoint or seal record (without a signature).

        ``{"day", "events", "head", "mark", "seq", "tick"}`` from the chain's
        state: the last event's day, seq and tick (``null`` before the
        first), the event count, and the head (``null`` if not chained).
        """
        if type(mark) is not str or not mark.isascii() or not mark.isalpha():
            raise ValueError(f"a mark is a plain word, got {mark!r}")
        cdef _Out out
        out.data = NULL
        out.size = 0
        out.cap = 0
        try:
            _put(&out, '{"day":', 7)
            if self._has_last:
                _put_ll(&out, self._last_day)
            else:
                _put(&out, "null", 4)
            _put(&out, ',"events":', 10)
            _put_ll(&out, self.events)
            _put(&out, ',"head":', 8)
            if self.chained:
                _put(&out, '"', 1)
                _put(&out, self._head, self._head_size)
                _put(&out, '"', 1)
            else:
                _put(&out, "null", 4)
            _put(&out, ',"mark":', 8)
            _put_str(&out, mark)
            _put(&out, ',"seq":', 7)
            if self._has_last:
                _put_ll(&out, self._last_seq)
            else:
                _put(&out, "null", 4)
            _put(&out, ',"tick":', 8)
            if self._has_last:
                _put_ll(&out, self._last_tick)
            else:
                _put(&out, "null", 4)
            _put(&out, "}", 1)
            return _out_text(&out, 0)
        finally:
            PyMem_Free(out.data)

    def add_text(self, body):
        """Add a line whose record is ``body``: canonical JSON of an object, ASCII."""
        if type(body) is not str or not body.isascii() or not body.endswith("}"):
            raise ValueError("a journal record is the canonical JSON text of an object")
        data = (<str>body).encode("ascii")
        cdef Py_ssize_t start = self._out.size
        _put(&self._out, data, len(data))
        self._close_line(start)

    def append(self, event):
        """Add the line of ``event`` (its seq must follow the last one's).

        Raises
        ------
        ValueError
            The event's seq is not after the last appended one.
        """
        cdef WorldEvent owned = _as_event(event)
        cdef long long seq = owned._seq
        cdef Py_ssize_t start = self._out.size
        if self._has_last and seq <= self._last_seq:
            raise ValueError(
                f"event seq {seq} is not after the last journaled seq {self._last_seq}: "
                "a journal is appended in seq order"
            )
        try:
            _put_event(&self._out, owned)
            self._close_line(start)
        except BaseException:
            self._out.size = start
            raise
        self._last_seq = seq
        self._last_tick = owned._tick
        self._last_day = owned._day
        self._has_last = True
        self.events += 1
        self.appended += 1
        self.since_mark += 1
        if self.checkpoint_on_day and (
            (self._has_mark_day and owned._day != self._mark_day) or owned._kind == self._day_kind
        ):
            self.day_ended = True
        if not self._has_mark_day:
            self._mark_day = owned._day
            self._has_mark_day = True
        if self.checkpoint_every and self.since_mark >= self.checkpoint_every:
            self._checkpoint()

    __call__ = append


def read_event_line(line, prev):
    """Return ``(seq, tick, day, kind, hash)`` of an event line the writer laid out, else ``None``.

    ``line`` (without its newline) is accepted only when it is exactly the
    canonical JSON of an event record whose payload values are ``null``,
    booleans, 64-bit ints, finite floats or strings, whose kind and payload
    keys need no escapes, followed by the ``"hash"`` member, and that hash
    is SHA-256 of ``prev`` (64 ASCII characters) and the record's bytes.
    Anything else returns ``None`` and is for the caller to explain.
    """
    cdef long long clock[3]
    cdef Py_ssize_t kind[2]
    cdef char digest[64]
    cdef const char* text
    cdef Py_ssize_t size
    if type(line) is not bytes or type(prev) is not str:
        return None
    if PyUnicode_GET_LENGTH(prev) != 64 or not (<str>prev).isascii():
        return None
    size = len(<bytes>line)
    text = <bytes>line
    if size < 76 or memcmp(text + size - 75, ',"hash":"', 9) != 0 or memcmp(text + size - 2, '"}', 2) != 0:
        return None
    kind[0] = kind[1] = 0
    if not rb_scan_event(text, size - 75, clock, kind):
        return None
    head = (<str>prev).encode("ascii")
    rb_chain_hex(<const char*>head, 64, text, size - 75, "}", 1, digest)
    if memcmp(digest, text + size - 66, 64) != 0:
        return None
    return (
        clock[0],
        clock[1],
        clock[2],
        text[kind[0]:kind[1]].decode("ascii"),
        digest[:64].decode("ascii"),
    )
