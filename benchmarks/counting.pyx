# cython: language_level=3
"""The load generator's per-frame hot path, compiled: a picows listener that counts data
frames in C and calls Python only for the frames that need it.

Why compiled: on a 2-core machine the load generator has one core for a burst, and a Python
``on_ws_frame`` per frame (the call into Python, ``get_payload_as_bytes``, two
``startswith``) made that core, not the relay, the limit of the relay's bursts; the figures
are in docs/performance.md, "A load generator that keeps up". Here a data frame costs a
prefix comparison on picows's own buffer and an increment, which is how picows's own
benchmark clients are written (a ``cdef class`` listener).

A frame is data when its payload starts with ``data_prefix`` and not with ``event_prefix``,
the test the Python listener made, on the bytes in place. Python runs only for a client's
first data frame, its ``target``-th, and every data frame of a sampling client
(``on_data(transport, frame)``), and for everything that is not data (``on_other(transport,
frame, payload)``): both are the Python subclass's.
"""

from libc.string cimport memcmp
from picows.picows cimport WSFrame, WSListener, WSTransport


cdef class CountingListener(WSListener):
    cdef public Py_ssize_t count
    """Data frames since the group was last armed."""
    cdef public Py_ssize_t target
    """The count at which ``on_data`` reports this client done (the group's target)."""
    cdef public bint sample
    """Parse every data frame in Python (the latency sample)."""
    cdef bytes data_prefix
    cdef bytes event_prefix
    cdef Py_ssize_t data_len
    cdef Py_ssize_t event_len

    def __init__(
        self,
        bytes data_prefix not None,
        bytes event_prefix not None,
        bint sample,
        Py_ssize_t target,
    ):
        self.data_prefix = data_prefix
        self.event_prefix = event_prefix
        self.data_len = len(data_prefix)
        self.event_len = len(event_prefix)
        self.sample = sample
        self.target = target
        self.count = 0

    cpdef on_ws_frame(self, WSTransport transport, WSFrame frame):
        cdef const char* payload = frame.payload_ptr
        cdef Py_ssize_t size = frame.payload_size
        if (
            size >= self.data_len
            and memcmp(payload, <const char*>self.data_prefix, self.data_len) == 0
            and not (
                size >= self.event_len
                and memcmp(payload, <const char*>self.event_prefix, self.event_len) == 0
            )
        ):
            self.count += 1
            if self.count == 1 or self.count == self.target or self.sample:
                self.on_data(transport, frame)
            return
        self.on_other(transport, frame, frame.get_payload_as_bytes())
