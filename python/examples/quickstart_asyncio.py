import asyncio, threading
import hostloop, hostloop.asyncio

def work(n):  # runs on a hostloop thread, off the event loop
    return sum(i * i for i in range(n))

async def main():
    loop = asyncio.get_running_loop()
    with hostloop.Runtime() as rt, hostloop.asyncio.attach(rt):
        done = loop.create_future()
        rt.spawn(work, 1000, on_main=done.set_result)  # on_main: on the loop's thread
        value = await done
        print("result", value, "on", threading.current_thread().name)

asyncio.run(main())
