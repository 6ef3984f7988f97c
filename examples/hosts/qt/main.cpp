// A Qt Widgets application driving the particles plugin through hostloop.hpp.
//
//     qt-host [--seconds S] [--max-seconds M] [--agents N] [--rate R] [--workers W]
//             [--export-frames N] [--export-dir DIR] [--screenshot FILE.png] [--isolated WORKER]
//             [--interactive] [PLUGIN]
//
// PLUGIN is the particles plugin library (libhostloop_particles.so), or $HOSTLOOP_PARTICLES_PLUGIN.
// With --isolated the plugin runs in a WORKER process (hostloop-worker, `cargo build -p
// hostloop-worker`): a crash there ends the worker, not this application. Nothing else changes:
// its frames reach the same sink, on the GUI thread, woken by the same wake fd.
//
// How hostloop sits in a Qt application:
//
// - one hostloop::Runtime, made on the GUI thread (which becomes hostloop's main thread);
// - a QSocketNotifier on its wake fd: when results are ready the doorbell rings, Qt's event loop
//   wakes up and the slot pumps with a 2 ms budget. The sink therefore runs on the GUI thread,
//   where touching widgets is allowed: it hands each particle frame to a widget and repaints it;
// - a 60 Hz QTimer: it refreshes the progress bar, and pumps once more as a fallback;
// - a cache export: a hostloop job on the IO lane that writes the next N frames to a file,
//   reporting progress (shown in a QProgressBar) and stopped by a Cancel button.
//
// Headless (QT_QPA_PLATFORM=offscreen) it runs a script: export a few frames (the job finishes),
// start a long export, click Cancel once --seconds have passed and the long export has made
// progress (frames arrived, the view was painted), wait for the job's outcome, save a
// screenshot, close the window. A loaded machine takes longer to get there: the script waits
// for those conditions, not for a fixed window, up to --max-seconds (120). Then it unloads the plugin, shuts the runtime down and prints key=value
// lines (examples/hosts/qt/test reads them). --interactive leaves the clicking to you.

#include <hostloop.hpp>

#include <QApplication>
#include <QDeadlineTimer>
#include <QElapsedTimer>
#include <QHBoxLayout>
#include <QLabel>
#include <QPainter>
#include <QProgressBar>
#include <QPushButton>
#include <QSocketNotifier>
#include <QSpinBox>
#include <QTimer>
#include <QVBoxLayout>
#include <QWidget>

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace {

// The plugin this host drives, and its topics. (-DPLUGIN='"orbits"' drives
// examples/plugin-template instead, which ignores "configure"; run it with --agents 10000.)
#ifndef PLUGIN
#define PLUGIN "particles"
#endif
const char *const kPlugin = PLUGIN;
const char *const kTopicStep = PLUGIN "/step";
const char *const kTopicPositions = PLUGIN "/positions";
const char *const kTopicError = PLUGIN "/error";
const char *const kTopicConfigure = PLUGIN "/configure";
// What the runtime tells the sink about an isolated plugin's worker (hostloop/plugin.h).
const char *const kTopicCrashed = "hostloop/plugin/crashed";
const char *const kTopicRestarted = "hostloop/plugin/restarted";
const char *const kTopicDown = "hostloop/plugin/down";

constexpr int kFrameMs = 16;                               // the 60 Hz frame timer
constexpr std::chrono::microseconds kPumpBudget{2000};     // main-thread work per pump
constexpr double kLateFactor = 1.5;                        // a frame this many periods late is late
constexpr std::chrono::milliseconds kDeadline{2000};       // unload and shutdown

struct Settings {
    double seconds = 3.0;
    double max_seconds = 120.0;
    long agents = 100000;
    double rate = 60.0;
    unsigned workers = 0;
    int export_frames = 30;
    std::string export_dir = ".";
    std::string screenshot;
    std::string plugin;
    std::string worker;  // --isolated: the hostloop-worker program; empty: in-process
    bool interactive = false;
};

// One particle frame: a copy of the sink's borrowed array, shared by the view and the exporter.
struct Frame {
    uint64_t seq = 0;   // the host's count of frames received
    uint64_t step = 0;  // the simulation step
    std::vector<float> xyz;
};
using FramePtr = std::shared_ptr<const Frame>;

// The newest frame, for the export job on the IO lane: the sink publishes on the main thread,
// the job waits for each new one.
class FrameFeed {
public:
    void publish(FramePtr frame) {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            latest_ = std::move(frame);
        }
        changed_.notify_all();
    }
    // The newest frame after `seq`, or null when none came within `timeout`.
    FramePtr wait_newer(uint64_t seq, std::chrono::milliseconds timeout) {
        std::unique_lock<std::mutex> lock(mutex_);
        changed_.wait_for(lock, timeout, [&] { return latest_ && latest_->seq > seq; });
        return latest_ && latest_->seq > seq ? latest_ : nullptr;
    }

private:
    std::mutex mutex_;
    std::condition_variable changed_;
    FramePtr latest_;
};

// Side view of the particles: x to the right, y up, floor at y = 0.
class ParticleView : public QWidget {
public:
    explicit ParticleView(QWidget *parent = nullptr) : QWidget(parent) {
        setMinimumSize(480, 320);
        setAttribute(Qt::WA_OpaquePaintEvent);
    }
    void show_frame(FramePtr frame) {
        frame_ = std::move(frame);
        update();  // coalesced by Qt: at most one paint per event-loop pass
    }
    uint64_t paints() const { return paints_; }
    double paint_max_ms() const { return paint_max_ms_; }

protected:
    void paintEvent(QPaintEvent *) override {
        ++paints_;
        QElapsedTimer took;
        took.start();
        paint();
        paint_max_ms_ = std::max(paint_max_ms_, took.nsecsElapsed() / 1e6);
    }

private:
    void paint() {
        QPainter p(this);
        p.fillRect(rect(), QColor(18, 20, 26));
        // World: x in [-6, 6], y in [-0.5, 11].
        const double sx = width() / 12.0, sy = height() / 11.5;
        const auto to_screen = [&](float x, float y) {
            return QPointF((x + 6.0) * sx, height() - (y + 0.5) * sy);
        };
        p.setPen(QColor(90, 96, 110));
        p.drawLine(to_screen(-6, 0), to_screen(6, 0));
        if (!frame_) {
            return;
        }
        const std::vector<float> &xyz = frame_->xyz;
        points_.resize(xyz.size() / 3);
        for (size_t i = 0; i < points_.size(); ++i) {
            points_[i] = to_screen(xyz[3 * i], xyz[3 * i + 1]);
        }
        // Fainter points when there are many, so density still shows.
        const int alpha = static_cast<int>(std::clamp(6e6 / std::max<size_t>(points_.size(), 1), 50.0, 200.0));
        p.setPen(QColor(255, 170, 60, alpha));
        p.drawPoints(points_.data(), static_cast<int>(points_.size()));
        p.setPen(QColor(200, 205, 215));
        p.drawText(rect().adjusted(8, 6, -8, -6), Qt::AlignTop | Qt::AlignLeft,
                   QString("step %1   %2 particles").arg(frame_->step).arg(points_.size()));
    }

    FramePtr frame_;
    std::vector<QPointF> points_;
    uint64_t paints_ = 0;
    double paint_max_ms_ = 0;
};

enum class PumpSource { notifier, timer };

// What one export job ended with, on the main thread.
struct ExportOutcome {
    hl_status_t status = HL_STATUS_PENDING;
    int frames_asked = 0;
    float progress = 0.0f;  // at the end (cancelled exports stop short of 1)
    long long bytes = -1;   // the finished file's size; -1 when there is none
    bool partial_left = false;
};

// How long the calling thread has waited for a CPU so far (runnable but not running), in ms:
// time the machine, not the application, took from its frames. Linux only; 0 elsewhere.
double cpu_wait_ms() {
#ifdef __linux__
    unsigned long long run_ns = 0, wait_ns = 0;
    if (FILE *f = std::fopen("/proc/thread-self/schedstat", "r")) {
        const int n = std::fscanf(f, "%llu %llu", &run_ns, &wait_ns);
        std::fclose(f);
        if (n == 2) {
            return static_cast<double>(wait_ns) / 1e6;
        }
    }
#endif
    return 0.0;
}

double quantile(std::vector<double> v, double q) {
    if (v.empty()) {
        return 0.0;
    }
    std::sort(v.begin(), v.end());
    size_t i = static_cast<size_t>(q * static_cast<double>(v.size()) + 0.999999);
    return v[i == 0 ? 0 : std::min(i, v.size()) - 1];
}

long long file_size(const std::string &path) {
    FILE *f = std::fopen(path.c_str(), "rb");
    if (f == nullptr) {
        return -1;
    }
    std::fseek(f, 0, SEEK_END);
    long long n = std::ftell(f);
    std::fclose(f);
    return n;
}

// The application: the window, the runtime, the plugin, and the counters it reports.
class HostWindow : public QWidget {
public:
    HostWindow(const Settings &settings, hostloop::Runtime &rt)
        : settings_(settings), rt_(rt), main_thread_(std::this_thread::get_id()) {
        setWindowTitle("hostloop — particles in Qt");
        view_ = new ParticleView(this);
        status_ = new QLabel(this);
        export_frames_ = new QSpinBox(this);
        export_frames_->setRange(1, 1000000);
        export_frames_->setValue(600);
        export_frames_->setSuffix(" frames");
        export_button_ = new QPushButton("Export cache", this);
        progress_ = new QProgressBar(this);
        progress_->setRange(0, 1000);
        progress_->setTextVisible(true);
        progress_->setFormat("%p%");
        cancel_button_ = new QPushButton("Cancel", this);
        cancel_button_->setEnabled(false);

        auto *row = new QHBoxLayout;
        row->addWidget(export_frames_);
        row->addWidget(export_button_);
        row->addWidget(progress_, 1);
        row->addWidget(cancel_button_);
        auto *layout = new QVBoxLayout(this);
        layout->addWidget(view_, 1);
        layout->addWidget(status_);
        layout->addLayout(row);
        resize(640, 480);

        connect(export_button_, &QPushButton::clicked, this, [this] { start_export(export_frames_->value()); });
        connect(cancel_button_, &QPushButton::clicked, this, [this] { cancel_export(); });

        // The sink: called by rt.pump(), so on this (the GUI) thread.
        rt_.set_sink([this](const hostloop::Message &m) { on_message(m); });

        // The doorbell: Qt watches the fd; its readability means "pump me".
        notifier_ = new QSocketNotifier(rt_.wake_fd(), QSocketNotifier::Read, this);
        connect(notifier_, &QSocketNotifier::activated, this, [this] { pump(PumpSource::notifier); });

        // The frame timer: progress bar, status line, and a fallback pump.
        frame_timer_.setTimerType(Qt::PreciseTimer);
        frame_timer_.setInterval(kFrameMs);
        connect(&frame_timer_, &QTimer::timeout, this, [this] { on_frame(); });
        // Frames are counted from the first pass of the event loop: startup is not a frame.
        QTimer::singleShot(0, this, [this] { start(); });
    }

    // Loads and configures the plugin, in this process or (--isolated) in a worker process of
    // its own. Throws hostloop::Error.
    void load_plugin() {
        const long long host_pid = QCoreApplication::applicationPid();
        if (settings_.worker.empty()) {
            plugin_ = hostloop::Plugin::load(rt_, settings_.plugin);
            std::printf("isolated=0 worker_pid=0 host_pid=%lld\n", host_pid);
        } else {
            // The isolation switch: the same plugin, in a hostloop-worker process. The notifier,
            // the frame timer and the sink do not change.
            plugin_ = hostloop::Plugin::load(
                rt_, settings_.plugin, hostloop::LoadOptions().own_process().worker_program(settings_.worker));
            std::printf("isolated=1 worker_pid=%u host_pid=%lld\n", plugin_.process().pid, host_pid);
        }
        char config[160];
        std::snprintf(config, sizeof config, "agents=%ld kernel=rust delivery=latest rate=%g playing=1",
                      settings_.agents, settings_.rate);
        rt_.post_custom(kTopicConfigure, config, std::strlen(config));
    }

    // The headless script: export, export again, Cancel once --seconds have passed and the
    // second export is under way (or at --max-seconds), wait, screenshot, close.
    void schedule_script() {
        script_timer_.setInterval(50);
        connect(&script_timer_, &QTimer::timeout, this, [this] {
            const double elapsed_s = clock_.elapsed() / 1e3;
            const bool under_way = exports_.size() >= 2 && export_job_ && export_job_.progress() > 0.0f;
            const bool seen = sim_frames_ >= 10 && view_->paints() >= 10;
            if (!(elapsed_s >= settings_.seconds && under_way && seen) && elapsed_s < settings_.max_seconds) {
                return;
            }
            script_timer_.stop();
            ending_ = true;
            if (cancel_button_->isEnabled()) {
                cancel_button_->click();
            }
            finish_when_idle(QDeadlineTimer(30000));
        });
        script_timer_.start();
    }

    // Stops everything hostloop does for this window; then the runtime can be shut down.
    void detach() {
        frame_timer_.stop();
        delete notifier_;  // before the runtime (and its fd) goes away
        notifier_ = nullptr;
        if (export_job_) {
            export_job_.cancel();
        }
        try {
            process_at_end_ = plugin_.process();  // did the worker stay the same, uncrashed?
        } catch (const hostloop::Error &e) {
            std::fprintf(stderr, "qt-host: plugin process: %s\n", e.what());
        }
        unload_ = plugin_.unload(kDeadline);
    }

    void print_report(const hostloop::ShutdownReport &down, const hostloop::Stats &stats) const {
        const double elapsed_s = clock_.elapsed() / 1e3;
        // The frames a 60 Hz timer has in the time the run took, less those the GUI thread could
        // not run because it was waiting for a CPU (another process held the cores).
        const double cpu_wait_ms = last_cpu_wait_ms_ - cpu_wait_start_ms_;
        const double expected = std::max(0.0, (clock_.elapsed() - cpu_wait_ms) / kFrameMs);
        const bool on_main = sink_messages_ > 0 && sink_off_main_ == 0;
        std::printf("host=qt plugin=%s seconds=%.2f workers=%u agents=%ld rate=%g qt=%s platform=%s\n", kPlugin,
                    elapsed_s, stats.workers, settings_.agents, settings_.rate, qVersion(),
                    qPrintable(QGuiApplication::platformName()));
        std::printf("frames=%" PRIu64 " expected_frames=%.0f late_frames=%" PRIu64 " painted=%" PRIu64
                    " paint_max_ms=%.2f\n",
                    frames_, expected, late_frames_, view_->paints(), view_->paint_max_ms());
        std::printf("frame_p50_ms=%.2f frame_p99_ms=%.2f frame_max_ms=%.2f\n", quantile(frame_ms_, 0.5),
                    quantile(frame_ms_, 0.99), quantile(frame_ms_, 1.0));
        std::printf("frame_own_p99_ms=%.2f frame_own_max_ms=%.2f cpu_wait_ms=%.1f\n", quantile(frame_own_ms_, 0.99),
                    quantile(frame_own_ms_, 1.0), last_cpu_wait_ms_ - cpu_wait_start_ms_);
        std::printf("fd_pumps=%" PRIu64 " timer_pumps=%" PRIu64 " pump_max_us=%lld pump_errors=%" PRIu64
                    " doorbell_rings=%" PRIu64 "\n",
                    notifier_pumps_, timer_pumps_, static_cast<long long>(pump_max_.count()), pump_errors_,
                    stats.doorbell_rings);
        std::printf("sink_messages=%" PRIu64 " sink_on_main=%d sink_off_main=%" PRIu64 "\n", sink_messages_,
                    on_main ? 1 : 0, sink_off_main_);
        std::printf("sim_frames=%" PRIu64 " sim_frames_via_fd=%" PRIu64 " sim_frames_via_timer=%" PRIu64
                    " bad_frames=%" PRIu64 " plugin_errors=%" PRIu64 " last_step=%" PRIu64
                    " last_frame_agents=%zu\n",
                    sim_frames_, frames_via_notifier_, frames_via_timer_, bad_frames_, plugin_errors_, last_step_,
                    last_agents_);
        for (size_t i = 0; i < exports_.size(); ++i) {
            const ExportOutcome &e = exports_[i];
            std::printf("export%zu=%s export%zu_frames=%d export%zu_progress=%.3f export%zu_bytes=%lld"
                        " export%zu_partial_left=%d\n",
                        i + 1, export_status_name(e.status), i + 1, e.frames_asked, i + 1, e.progress, i + 1,
                        e.bytes, i + 1, e.partial_left ? 1 : 0);
        }
        std::printf("exports=%zu export_running=%d\n", exports_.size(), export_job_ ? 1 : 0);
        std::printf("worker_pid_at_end=%u worker_crashes=%u worker_restarts=%u worker_down=%d"
                    " crash_events=%" PRIu64 " restart_events=%" PRIu64 " down_events=%" PRIu64 "\n",
                    process_at_end_.pid, process_at_end_.crashes, process_at_end_.restarts,
                    process_at_end_.down ? 1 : 0, crash_events_, restart_events_, down_events_);
        std::printf("unload=%s unload_ms=%.1f shutdown_ms=%.1f threads_joined=%u stragglers=%" PRIu64 "\n",
                    unload_.timed_out ? "TIMEOUT" : "OK", unload_.elapsed.count() / 1e3, down.elapsed.count() / 1e3,
                    down.threads_joined, down.stragglers);
    }

    bool sink_ok() const { return sink_messages_ > 0 && sink_off_main_ == 0 && bad_frames_ == 0; }
    bool unload_ok() const { return !unload_.timed_out; }
    std::string export_path(size_t index) const {
        return settings_.export_dir + "/particles-cache-" + std::to_string(index) + ".bin";
    }

private:
    void start() {
        clock_.start();
        last_frame_ms_ = 0;
        last_cpu_wait_ms_ = cpu_wait_start_ms_ = cpu_wait_ms();
        frame_timer_.start();
        if (!settings_.interactive) {
            schedule_script();
        }
    }

    static const char *export_status_name(hl_status_t status) {
        switch (status) {
        case HL_STATUS_OK: return "ok";
        case HL_STATUS_CANCELLED: return "cancelled";
        case HL_STATUS_PENDING: return "pending";
        default: return hostloop::status_name(status);
        }
    }

    void pump(PumpSource source) {
        pumping_ = source;
        try {
            const hostloop::PumpReport report = rt_.pump(kPumpBudget);
            pump_max_ = std::max(pump_max_, report.elapsed);
            ++(source == PumpSource::notifier ? notifier_pumps_ : timer_pumps_);
        } catch (const hostloop::Error &e) {
            ++pump_errors_;
            std::fprintf(stderr, "qt-host: pump: %s\n", e.what());
        }
    }

    void on_message(const hostloop::Message &m) {
        ++sink_messages_;
        if (std::this_thread::get_id() != main_thread_) {
            ++sink_off_main_;
        }
        if (m.topic() == kTopicStep && m.bytes_len() >= 8) {  // the step, then the configuration
            uint64_t step = 0;
            for (int i = 7; i >= 0; --i) {
                step = step << 8 | m.bytes()[i];
            }
            last_step_ = step;
        } else if (m.topic() == kTopicPositions) {
            const hl_array_view_t &a = m.array();
            if (m.array_data<float>() == nullptr || a.components != 3 || a.stride < 3 * sizeof(float)) {
                ++bad_frames_;
                return;
            }
            auto frame = std::make_shared<Frame>();
            frame->seq = ++sim_frames_;
            frame->step = last_step_;
            frame->xyz.resize(a.count * 3);
            const char *record = static_cast<const char *>(a.data);
            for (size_t i = 0; i < a.count; ++i, record += a.stride) {  // records may be padded
                std::memcpy(&frame->xyz[3 * i], record, 3 * sizeof(float));
            }
            last_agents_ = static_cast<size_t>(a.count);
            ++(pumping_ == PumpSource::notifier ? frames_via_notifier_ : frames_via_timer_);
            FramePtr shared = std::move(frame);
            feed_->publish(shared);
            view_->show_frame(std::move(shared));
            // The script's first export starts once frames have the configured size.
            if (!settings_.interactive && exports_.empty() && !export_job_ &&
                last_agents_ == static_cast<size_t>(settings_.agents)) {
                start_export(settings_.export_frames);
            }
        } else if (m.topic() == kTopicError) {
            ++plugin_errors_;
            std::fprintf(stderr, "qt-host: %s: %.*s\n", kPlugin, static_cast<int>(m.bytes_len()),
                         reinterpret_cast<const char *>(m.bytes()));
        } else if (m.topic() == kTopicCrashed || m.topic() == kTopicRestarted || m.topic() == kTopicDown) {
            // An isolated plugin's worker was lost (and is restarted, or stays down): the
            // application carries on; say so.
            ++(m.topic() == kTopicCrashed ? crash_events_ : m.topic() == kTopicRestarted ? restart_events_ : down_events_);
            std::fprintf(stderr, "qt-host: %.*s:\n%.*s\n", static_cast<int>(m.topic().size()), m.topic().data(),
                         static_cast<int>(m.bytes_len()), reinterpret_cast<const char *>(m.bytes()));
        }
    }

    void on_frame() {
        const double now = clock_.nsecsElapsed() / 1e6;
        const double interval = now - last_frame_ms_;
        last_frame_ms_ = now;
        ++frames_;
        const double wait = cpu_wait_ms();
        frame_ms_.push_back(interval);
        frame_own_ms_.push_back(interval - (wait - last_cpu_wait_ms_));
        last_cpu_wait_ms_ = wait;
        late_frames_ += interval > kLateFactor * kFrameMs;
        pump(PumpSource::timer);
        if (export_job_) {
            progress_->setValue(static_cast<int>(export_job_.progress() * 1000));
        }
        status_->setText(QString("frame %1   sim step %2   pumps: %3 by the wake fd, %4 by the timer")
                             .arg(frames_)
                             .arg(last_step_)
                             .arg(notifier_pumps_)
                             .arg(timer_pumps_));
    }

    // The cache export: on the IO lane (it writes a file), one record per new frame:
    // u64 step, u64 count, count * xyz f32. Written to a ".part" file renamed when complete; a
    // cancelled or failed export removes it.
    void start_export(int frames) {
        if (export_job_) {
            return;
        }
        const size_t index = exports_.size() + 1;
        const std::string path = export_path(index);
        ExportOutcome outcome;
        outcome.frames_asked = frames;
        exports_.push_back(outcome);
        std::shared_ptr<FrameFeed> feed = feed_;
        export_job_ = rt_.spawn(
            [feed, path, frames](hostloop::JobContext &ctx) -> int32_t {
                const std::string part = path + ".part";
                std::unique_ptr<FILE, int (*)(FILE *)> out(std::fopen(part.c_str(), "wb"), &std::fclose);
                if (!out) {
                    return 1;
                }
                struct RemoveUnlessDone {
                    const std::string &file;
                    bool done = false;
                    ~RemoveUnlessDone() {
                        if (!done) {
                            std::remove(file.c_str());
                        }
                    }
                } guard{part};
                uint64_t seq = 0;
                for (int written = 0; written < frames;) {
                    ctx.check();  // throws once cancelled: the job ends as CANCELLED
                    FramePtr frame = feed->wait_newer(seq, std::chrono::milliseconds(50));
                    if (!frame) {
                        continue;
                    }
                    seq = frame->seq;
                    const uint64_t count = frame->xyz.size() / 3;
                    if (std::fwrite(&frame->step, 8, 1, out.get()) != 1 || std::fwrite(&count, 8, 1, out.get()) != 1 ||
                        std::fwrite(frame->xyz.data(), sizeof(float), frame->xyz.size(), out.get()) !=
                            frame->xyz.size()) {
                        return 2;
                    }
                    ++written;
                    ctx.progress(static_cast<float>(written) / static_cast<float>(frames));
                }
                if (std::fclose(out.release()) != 0 || std::rename(part.c_str(), path.c_str()) != 0) {
                    return 3;
                }
                guard.done = true;
                return 0;
            },
            [this, index, path](hl_status_t status, int32_t code) { export_done(index, path, status, code); },
            hostloop::SpawnOptions(hostloop::Priority::normal, hostloop::Lane::io, "cache export"));
        progress_->setValue(0);
        progress_->setFormat("exporting: %p%");
        export_button_->setEnabled(false);
        cancel_button_->setEnabled(true);
    }

    void cancel_export() {
        if (export_job_) {
            export_job_.cancel();  // the job sees it at its next ctx.check()
        }
        cancel_button_->setEnabled(false);
    }

    // The job's outcome, on the main thread at a pump.
    void export_done(size_t index, const std::string &path, hl_status_t status, int32_t code) {
        ExportOutcome &e = exports_[index - 1];
        e.status = status;
        e.progress = export_job_ ? export_job_.progress() : 0.0f;
        e.bytes = status == HL_STATUS_OK ? file_size(path) : -1;
        e.partial_left = file_size(path + ".part") >= 0;
        if (status == HL_STATUS_FAILED) {
            std::fprintf(stderr, "qt-host: export %zu failed with code %d\n", index, code);
        }
        export_job_ = hostloop::Job();
        progress_->setValue(static_cast<int>(e.progress * 1000));
        progress_->setFormat(QString("export %1: %2 at %p%").arg(index).arg(export_status_name(status)));
        export_button_->setEnabled(true);
        cancel_button_->setEnabled(false);
        // The script: after the short export, one that would take twice the run at the frame
        // rate seen so far, for Cancel to stop.
        if (!settings_.interactive && !ending_ && index == 1) {
            const double frames_per_s = sim_frames_ / std::max(0.001, clock_.elapsed() / 1e3);
            export_frames_->setValue(std::max(60, static_cast<int>(frames_per_s * settings_.seconds * 2)));
            export_button_->click();
        }
    }

    void finish_when_idle(QDeadlineTimer deadline) {
        if (export_job_ && !deadline.hasExpired()) {
            QTimer::singleShot(10, this, [this, deadline] { finish_when_idle(deadline); });
            return;
        }
        if (!settings_.screenshot.empty()) {
            grab().save(QString::fromStdString(settings_.screenshot));
        }
        close();
    }

    const Settings &settings_;
    hostloop::Runtime &rt_;
    const std::thread::id main_thread_;
    hostloop::Plugin plugin_;
    hostloop::UnloadReport unload_;
    hostloop::PluginProcess process_at_end_;  // just before the unload
    uint64_t crash_events_ = 0, restart_events_ = 0, down_events_ = 0;
    std::shared_ptr<FrameFeed> feed_ = std::make_shared<FrameFeed>();
    hostloop::Job export_job_;
    std::vector<ExportOutcome> exports_;
    bool ending_ = false;

    ParticleView *view_ = nullptr;
    QLabel *status_ = nullptr;
    QSpinBox *export_frames_ = nullptr;
    QPushButton *export_button_ = nullptr;
    QProgressBar *progress_ = nullptr;
    QPushButton *cancel_button_ = nullptr;
    QSocketNotifier *notifier_ = nullptr;
    QTimer frame_timer_;
    QTimer script_timer_;
    QElapsedTimer clock_;

    PumpSource pumping_ = PumpSource::timer;
    uint64_t notifier_pumps_ = 0, timer_pumps_ = 0, pump_errors_ = 0;
    std::chrono::microseconds pump_max_{0};
    uint64_t frames_ = 0, late_frames_ = 0;
    double last_frame_ms_ = 0;
    double cpu_wait_start_ms_ = 0, last_cpu_wait_ms_ = 0;
    std::vector<double> frame_ms_;      // the interval before each frame
    std::vector<double> frame_own_ms_;  // the same, less the time the GUI thread waited for a CPU
    uint64_t sink_messages_ = 0, sink_off_main_ = 0;
    uint64_t sim_frames_ = 0, frames_via_notifier_ = 0, frames_via_timer_ = 0;
    uint64_t bad_frames_ = 0, plugin_errors_ = 0, last_step_ = 0;
    size_t last_agents_ = 0;
};

bool parse(int argc, char **argv, Settings &s) {
    if (const char *env = std::getenv("HOSTLOOP_PARTICLES_PLUGIN")) {
        s.plugin = env;
    }
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        const char *value = i + 1 < argc ? argv[i + 1] : nullptr;
        const bool has = value != nullptr;
        if (arg == "--seconds" && has) {
            s.seconds = std::atof(argv[++i]);
        } else if (arg == "--max-seconds" && has) {
            s.max_seconds = std::atof(argv[++i]);
        } else if (arg == "--agents" && has) {
            s.agents = std::atol(argv[++i]);
        } else if (arg == "--rate" && has) {
            s.rate = std::atof(argv[++i]);
        } else if (arg == "--workers" && has) {
            s.workers = static_cast<unsigned>(std::atol(argv[++i]));
        } else if (arg == "--export-frames" && has) {
            s.export_frames = std::atoi(argv[++i]);
        } else if (arg == "--export-dir" && has) {
            s.export_dir = argv[++i];
        } else if (arg == "--screenshot" && has) {
            s.screenshot = argv[++i];
        } else if (arg == "--isolated" && has) {
            s.worker = argv[++i];
        } else if (arg == "--interactive") {
            s.interactive = true;
        } else if (!arg.empty() && arg[0] != '-') {
            s.plugin = arg;
        } else {
            return false;
        }
    }
    return !s.plugin.empty() && s.seconds > 0 && s.max_seconds >= s.seconds && s.agents > 0 && s.rate >= 0 && s.export_frames > 0;
}

}  // namespace

int main(int argc, char **argv) {
    std::setvbuf(stdout, nullptr, _IOLBF, 0);
    QApplication app(argc, argv);  // takes Qt's own options (-platform ...) out of argv
    Settings settings;
    if (!parse(argc, argv, settings)) {
        std::fprintf(stderr,
                     "usage: %s [--seconds S] [--max-seconds M] [--agents N] [--rate R] [--workers W]\n"
                     "          [--export-frames N] [--export-dir DIR] [--screenshot FILE.png]\n"
                     "          [--isolated WORKER] [--interactive] [PLUGIN]\n"
                     "Headless, the script runs at least S seconds (3), until its checks have something\n"
                     "to check, and at most M seconds (120).\n"
                     "PLUGIN defaults to $HOSTLOOP_PARTICLES_PLUGIN. With --isolated the plugin runs in a\n"
                     "WORKER process (hostloop-worker): a crash there ends the worker, not this host.\n",
                     argv[0]);
        return 2;
    }
    try {
        // The runtime first: made on the GUI thread, freed after the window is gone.
        hostloop::Runtime rt(hostloop::Options().workers(settings.workers).thread_name("qt-host"));
        hostloop::ShutdownReport down;
        hostloop::Stats stats{};
        bool ok = false;
        {
            HostWindow window(settings, rt);
            window.load_plugin();
            window.show();
            const int qt_status = app.exec();
            window.detach();
            stats = rt.stats();
            down = rt.shutdown(kDeadline);
            window.print_report(down, stats);
            ok = qt_status == 0 && window.sink_ok() && window.unload_ok() && !down.timed_out && down.stragglers == 0;
        }
        std::printf("shutdown=%s\n", ok ? "OK" : "FAILED");
        return ok ? 0 : 1;
    } catch (const hostloop::Error &e) {
        std::fprintf(stderr, "qt-host: %s\n", e.what());
        std::printf("shutdown=FAILED\n");
        return 1;
    }
}
