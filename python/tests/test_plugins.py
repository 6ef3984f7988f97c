import threading

import pytest

import hostloop


def _frames(rt, particles, need=3):
    got = []
    main = threading.get_ident()
    # An Array is valid for new views inside its sink call only: keep() holds one.
    keep = lambda p: p.keep() if isinstance(p, hostloop.Array) else p
    rt.set_sink(lambda topic, payload: got.append((topic, keep(payload), threading.get_ident())))
    plugin = rt.load_plugin(particles)
    assert plugin.name == "particles"
    rt.post_event("particles/configure", b"agents=1000")
    pos = lambda: [p for t, p, _ in got if t == "particles/positions" and len(p) == 1000]
    assert rt.run_until(lambda: len(pos()) >= need, 60.0)
    assert all(tid == main for _, _, tid in got)
    return plugin, got, pos()


def test_sink_receives_particles_frames(rt, particles):
    plugin, got, frames = _frames(rt, particles)
    arr = frames[-1]
    assert isinstance(arr, hostloop.Array)
    assert arr.format == "f" and arr.shape == (1000, 3) and arr.itemsize == 4
    mv = arr.memoryview()
    assert mv.readonly and mv.shape == (1000, 3) and mv.format == "f"
    assert len(arr.tobytes()) == 1000 * 3 * 4
    steps = [p for t, p, _ in got if t == "particles/step"]
    assert steps and all(isinstance(s, bytes) and len(s) == 16 for s in steps)
    plugin.unload(5.0)


def test_array_numpy(rt, particles):
    np = pytest.importorskip("numpy")
    plugin, _, frames = _frames(rt, particles)
    a = np.asarray(frames[-1])
    assert a.dtype == np.float32 and a.shape == (1000, 3)
    assert not a.flags.writeable
    assert np.isfinite(a).all()
    plugin.unload(5.0)


def test_unload_twice_raises(rt, particles):
    plugin = rt.load_plugin(particles)
    report = plugin.unload(5.0)
    assert report["stragglers"] == 0
    assert not plugin.loaded
    with pytest.raises(hostloop.HostloopError, match="already unloaded"):
        plugin.unload(5.0)


def test_sink_that_raises_keeps_loop_running(rt, particles, monkeypatch):
    import sys
    reported = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: reported.append(u.exc_value))
    calls = []

    def sink(topic, payload):
        calls.append(topic)
        raise RuntimeError("boom")

    rt.set_sink(sink)
    plugin = rt.load_plugin(particles)
    assert rt.run_until(lambda: calls.count("particles/positions") >= 3, 60.0)
    assert reported and all(isinstance(e, RuntimeError) for e in reported)
    plugin.unload(5.0)


def test_reload(rt, particles):
    plugin = rt.load_plugin(particles)
    plugin.reload()
    assert plugin.loaded
    plugin.unload(5.0)


def test_plugin_methods_are_main_thread_only_and_a_drop_elsewhere_unloads_on_main(
        rt, particles, monkeypatch):
    import sys
    reported = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: reported.append(u.exc_value))
    plugin = rt.load_plugin(particles)
    errors = []

    def unload_elsewhere():
        try:
            plugin.unload(5.0)
        except hostloop.HostloopError as e:
            errors.append(str(e))

    t = threading.Thread(target=unload_elsewhere)
    t.start()
    t.join()
    assert errors and "main thread" in errors[0], errors
    assert plugin.loaded
    # The last reference goes on another thread: the unload is posted to the main thread and
    # runs at a pump (nothing leaked, nothing reported).
    holder = [plugin]
    del plugin
    before = rt.stats()["main_items_run"]
    t = threading.Thread(target=holder.clear)
    t.start()
    t.join()
    assert rt.run_until(lambda: rt.stats()["main_items_run"] > before, 30.0)
    assert reported == []


def _steps(got):
    return [int.from_bytes(p[:8], "little") for t, p, _ in got if t == "particles/step"]


def test_info_reload_and_playback(rt, particles):
    plugin, got, _ = _frames(rt, particles)
    info = plugin.info()
    assert info["name"] == "particles" and info["isolation"] == "in_process"
    assert info["pid"] is None
    # Hot reload from the same file: still loaded, a new generation, frames keep coming.
    gen = info["generation"]
    plugin.reload()
    assert plugin.loaded and plugin.info()["generation"] > gen
    n = len(got)
    assert rt.run_until(lambda: len(got) > n + 3, 60.0)
    # Playback events reach the plugin (a pause, then play again: frames resume).
    rt.post_playback(False)
    rt.post_playback(True)
    n = len(_steps(got))
    assert rt.run_until(lambda: len(_steps(got)) > n + 3, 60.0)
    plugin.unload(5.0)
    with pytest.raises(hostloop.HostloopError, match="unloaded"):
        plugin.info()


def test_a_shared_process_group_runs_two_plugins_in_one_worker(rt, particles, template):
    got = []
    rt.set_sink(lambda topic, payload: got.append(topic))
    a = rt.load_plugin(particles, isolation="shared:sims")
    b = rt.load_plugin(template, isolation="shared:sims")
    ia, ib = a.info(), b.info()
    assert ia["isolation"] == ib["isolation"] == "shared:sims"
    assert ia["pid"] is not None and ia["pid"] == ib["pid"]
    assert rt.run_until(lambda: "particles/positions" in got
                        and any(t.startswith("orbits/") for t in got), 60.0), set(got)
    a.unload(10.0)
    b.unload(10.0)
