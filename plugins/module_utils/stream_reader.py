# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A read-only file object over an iterator of byte chunks (an S3 object streamed by ``iter_object``).

``tarfile`` in stream mode (``r|*``) reads from it; every chunk passes through ``on_chunk`` (a
hash update) exactly once, so the checksum of what was read costs no second pass.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import io


class ChunkReader(io.RawIOBase):
    """``read(n)`` over ``chunks``; ``size`` counts the bytes taken from the iterator."""

    def __init__(self, chunks, on_chunk=None):
        super(ChunkReader, self).__init__()
        self._chunks = iter(chunks)
        self._on_chunk = on_chunk
        self._buffer = b""
        self._eof = False
        self.size = 0

    def readable(self):
        return True

    def _next(self):
        for chunk in self._chunks:
            if chunk:
                self.size += len(chunk)
                if self._on_chunk is not None:
                    self._on_chunk(chunk)
                return chunk
        self._eof = True
        return b""

    def readinto(self, buf):
        """Fill ``buf`` as far as the stream goes (short only at the end)."""
        count = 0
        while count < len(buf):
            if not self._buffer:
                if self._eof:
                    break
                self._buffer = self._next()
                continue
            take = min(len(buf) - count, len(self._buffer))
            buf[count:count + take] = self._buffer[:take]
            self._buffer = self._buffer[take:]
            count += take
        return count

    def drain(self):
        """Consume what the reader of the stream left (tar padding), so ``on_chunk`` saw every byte."""
        self._buffer = b""
        while not self._eof:
            self._next()
