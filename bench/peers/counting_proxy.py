"""counting_proxy.py: a TCP proxy on 127.0.0.1 that counts the requests a
client sends through it, for the stores whose own counters are not both
current and exact (Consul's agent metrics come in 10 s intervals; PostgreSQL
flushes its statistics when a backend has been idle a while).

    p = Proxy("127.0.0.1:8500", "http")   # or "pg"
    ... point the client at p.address ...
    p.count(); p.close()

"http" counts request lines (" HTTP/1.1\\r\\n" in what the client sends);
"pg" counts the frontend messages that end a round trip: Query and Sync.
"""

import asyncio
import struct
import threading

PG_UNTYPED_CODES = (80877103, 80877104)  # SSLRequest, GSSENCRequest


class _Http:
    MARK = b" HTTP/1.1\r\n"

    def __init__(self):
        self.tail = b""

    def feed(self, data):
        buf = self.tail + data
        self.tail = buf[-(len(self.MARK) - 1):]
        return buf.count(self.MARK)


class _Pg:
    def __init__(self):
        self.buf = b""
        self.startup = True

    def feed(self, data):
        self.buf += data
        n = 0
        while True:
            if self.startup:
                if len(self.buf) < 8:
                    return n
                length, code = struct.unpack("!II", self.buf[:8])
                if len(self.buf) < length:
                    return n
                self.buf = self.buf[length:]
                # Answered by one byte ('N'), then a startup message follows.
                self.startup = code in PG_UNTYPED_CODES
                continue
            if len(self.buf) < 5:
                return n
            kind = self.buf[:1]
            (length,) = struct.unpack("!I", self.buf[1:5])
            if len(self.buf) < 1 + length:
                return n
            self.buf = self.buf[1 + length:]
            if kind in (b"Q", b"S"):
                n += 1


class Proxy:
    def __init__(self, upstream, protocol):
        host, port = upstream.rsplit(":", 1)
        self._up = (host, int(port))
        self._proto = {"http": _Http, "pg": _Pg}[protocol]
        self._n = 0
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self._thread.start()
        ready.wait()

    def _run(self, ready):
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._client, "127.0.0.1", 0, backlog=4096))
        self.address = "127.0.0.1:%d" % self._server.sockets[0].getsockname()[1]
        ready.set()
        self._loop.run_forever()

    async def _client(self, reader, writer):
        try:
            ur, uw = await asyncio.open_connection(*self._up)
        except OSError:
            writer.close()
            return
        parser = self._proto()

        async def pump(src, dst, count):
            try:
                while True:
                    data = await src.read(65536)
                    if not data:
                        break
                    if count:
                        k = parser.feed(data)
                        if k:
                            with self._lock:
                                self._n += k
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                try:
                    dst.close()
                except (OSError, RuntimeError):
                    pass

        await asyncio.gather(pump(reader, uw, True), pump(ur, writer, False))

    def count(self):
        with self._lock:
            return self._n

    async def _shutdown(self):
        self._server.close()
        me = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not me]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def close(self):
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
