import asyncio
import concurrent.futures
import threading

import hostloop
import hostloop.asyncio as hl_asyncio


def _square(x):
    return x * x


def _adopt(rt, executor):
    main = threading.get_ident()
    got = []
    fut = executor.submit(_square, 7)
    rt.adopt(fut, lambda f: got.append((f.result(), threading.get_ident())))
    assert rt.run_until(lambda: got, 60.0)
    assert got == [(49, main)]


def test_adopt_thread_pool(rt):
    with concurrent.futures.ThreadPoolExecutor(2) as ex:
        _adopt(rt, ex)


def test_adopt_process_pool(rt):
    with concurrent.futures.ProcessPoolExecutor(1) as ex:
        _adopt(rt, ex)


def test_call_soon_from_other_thread(rt):
    got = []
    t = threading.Thread(target=lambda: rt.call_soon(lambda: got.append(threading.get_ident())))
    t.start()
    t.join(30)
    assert rt.run_until(lambda: got, 30.0)
    assert got == [threading.get_ident()]


def test_asyncio_attach_counts_pumps(rt):
    async def main():
        loop = asyncio.get_running_loop()
        detach = hl_asyncio.attach(rt, loop)
        done = loop.create_future()
        n = 5
        seen = []

        def item(i):
            seen.append(i)
            if len(seen) == n:
                done.set_result(True)

        for i in range(n):
            rt.call_soon(lambda i=i: item(i))
        await asyncio.wait_for(done, 30)
        detach()
        return seen

    before = rt.stats()["pumps"]
    assert asyncio.run(main()) == list(range(5))
    assert rt.stats()["pumps"] > before
