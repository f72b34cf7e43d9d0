// One "generate 3D from image" job end to end: submit -> follow events -> download outside the
// project -> verify -> move into place. The editor layer only renders Snapshot() and imports the file.
using System;
using System.Diagnostics;
using System.IO;
using System.Threading;
using System.Threading.Tasks;

namespace PropForge.Client
{
    public enum RunnerState { Submitting, Queued, Running, Downloading, Succeeded, Failed, Cancelled }

    public sealed class JobRunner
    {
        readonly PropForgeClient client;
        readonly byte[] image;
        readonly object gate = new object();
        readonly CancellationTokenSource cts = new CancellationTokenSource();
        volatile bool cancelRequested;

        public readonly string ImageName;
        public readonly JobOptions Options;
        /// <summary>Folder outside the engine's asset folder for partial downloads (Unity: Library/PropForge/Downloads).</summary>
        public readonly string DownloadDir;
        /// <summary>Where the verified GLB goes (Unity: Assets/PropForge/Generated/name.glb).</summary>
        public readonly string OutputPath;

        public string JobId { get; private set; }
        public RunnerState State { get; private set; }
        public string Description { get; private set; }
        public double Fraction { get; private set; }
        public double EtaSeconds { get; private set; }
        public string Error { get; private set; }
        public ErrorKind ErrorKind { get; private set; }
        public long LastSequence { get; private set; }
        public JobEvent Finished { get; private set; }
        public DownloadResult Download { get; private set; }

        /// <summary>Raised (on a worker thread) whenever state, progress or description change.</summary>
        public event Action<JobRunner> Changed;

        /// <summary>A new job for these image bytes.</summary>
        public JobRunner(PropForgeClient client, byte[] image, string imageName, JobOptions options, string downloadDir, string outputPath)
        {
            this.client = client;
            this.image = image;
            ImageName = imageName ?? "image.png";
            Options = options != null ? options.Clone() : new JobOptions();
            DownloadDir = downloadDir;
            OutputPath = outputPath;
            State = RunnerState.Submitting;
            Description = "submitting";
            EtaSeconds = -1;
            Error = "";
        }

        /// <summary>Re-attaches to a job submitted earlier (e.g. before a Unity domain reload).</summary>
        public static JobRunner Attach(PropForgeClient client, string jobId, long lastSequence, string imageName,
            JobOptions options, string downloadDir, string outputPath)
        {
            var r = new JobRunner(client, null, imageName, options, downloadDir, outputPath);
            r.JobId = jobId;
            r.LastSequence = lastSequence;
            r.State = RunnerState.Queued;
            r.Description = "reconnecting";
            return r;
        }

        public bool IsDone
        {
            get { return State == RunnerState.Succeeded || State == RunnerState.Failed || State == RunnerState.Cancelled; }
        }

        public string PartPath
        {
            get { return Path.Combine(DownloadDir, (JobId ?? "pending") + ".glb.part"); }
        }

        /// <summary>Runs the job to a terminal state. Never throws: the outcome is in State/Error.</summary>
        public async Task RunAsync()
        {
            try
            {
                if (JobId == null)
                {
                    var job = await client.SubmitAsync(image, ImageName, Options, cts.Token).ConfigureAwait(false);
                    JobId = job.Id;
                    Set(job.State == JobStates.Running ? RunnerState.Running : RunnerState.Queued, "queued", job.Fraction, -1);
                    if (cancelRequested) await SendCancel().ConfigureAwait(false);
                }
                var last = await client.WatchAsync(JobId, LastSequence, OnEvent, cts.Token).ConfigureAwait(false);
                if (last.Kind == JobEvent.KindFailed)
                {
                    Fail(ErrorKind.JobFailed, "generation failed: " + (last.Reason.Length > 0 ? last.Reason : "no reason given")
                        + (last.Code.Length > 0 ? " (" + last.Code + ")" : ""));
                    return;
                }
                if (last.Kind == JobEvent.KindCancelled || cancelRequested)
                {
                    Set(RunnerState.Cancelled, "cancelled" + (last.Reason.Length > 0 ? ": " + last.Reason : ""), Fraction, -1);
                    return;
                }
                Finished = last;
                await DownloadAndPlace().ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                Cleanup();
                Set(RunnerState.Cancelled, "cancelled", Fraction, -1);
            }
            catch (PropForgeException e)
            {
                if (cancelRequested) { Cleanup(); Set(RunnerState.Cancelled, "cancelled", Fraction, -1); }
                else Fail(e.Kind, e.Message);
            }
            catch (Exception e)
            {
                Fail(ErrorKind.Server, "unexpected error: " + e.Message);
            }
        }

        async Task DownloadAndPlace()
        {
            Set(RunnerState.Downloading, "downloading", 1.0, -1);
            // The client reports every 64 KiB chunk; each Set is a post to the editor's main thread, so
            // report only when another MiB is done or 100 ms have passed, and always the last chunk.
            // The callbacks of one download run one after another (awaited), so no lock is needed.
            long reportedBytes = 0;
            var sinceReport = Stopwatch.StartNew();
            var dl = await client.DownloadAsync(JobId, PartPath, Finished.ResultSha256,
                (done, total) =>
                {
                    bool last = total >= 0 && done >= total;
                    if (!last && done - reportedBytes < (1 << 20) && sinceReport.ElapsedMilliseconds < 100) return;
                    reportedBytes = done;
                    sinceReport.Restart();
                    Set(RunnerState.Downloading, "downloading " + (done >> 10) + " KiB", 1.0, -1);
                }, cts.Token).ConfigureAwait(false);
            if (Finished.ResultSize > 0 && dl.Size != Finished.ResultSize)
            {
                File.Delete(PartPath);
                throw new PropForgeException(ErrorKind.Integrity, "downloaded " + dl.Size + " bytes but the job reported " + Finished.ResultSize);
            }
            if (cancelRequested) throw new OperationCanceledException();
            MoveIntoPlace(PartPath, OutputPath);
            Download = dl;
            Set(RunnerState.Succeeded, Finished.Cached ? "done (cached)" : "done", 1.0, 0);
        }

        /// <summary>Atomic replace within one volume: the engine never sees a half-written GLB.</summary>
        public static void MoveIntoPlace(string src, string dst)
        {
            string dir = Path.GetDirectoryName(Path.GetFullPath(dst));
            if (!string.IsNullOrEmpty(dir)) Directory.CreateDirectory(dir);
            if (File.Exists(dst)) File.Replace(src, dst, null);
            else File.Move(src, dst);
        }

        /// <summary>User cancel: asks the server to cancel, then stops following the job.</summary>
        public void Cancel()
        {
            if (IsDone || cancelRequested) return;
            cancelRequested = true;
            Set(State, "cancelling", Fraction, -1);
            if (JobId == null) return;  // RunAsync cancels right after submit returns the id
            SendCancel().ContinueWith(t => cts.Cancel());
        }

        async Task SendCancel()
        {
            using (var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(15)))
            {
                try { await client.CancelAsync(JobId, timeout.Token).ConfigureAwait(false); }
                catch (Exception) { /* the server may be gone; the local side stops anyway */ }
            }
        }

        void OnEvent(JobEvent e)
        {
            LastSequence = e.Sequence;
            switch (e.Kind)
            {
                case JobEvent.KindQueued: Set(RunnerState.Queued, e.Describe(), 0, -1); break;
                case JobEvent.KindStageStarted: Set(RunnerState.Running, e.Describe(), Fraction, EtaSeconds); break;
                case JobEvent.KindProgress: Set(RunnerState.Running, e.Describe(), e.Fraction >= 0 ? e.Fraction : Fraction, e.EtaSeconds); break;
                default: Set(State, e.Describe(), Fraction, -1); break;
            }
        }

        void Cleanup()
        {
            try { if (JobId != null && File.Exists(PartPath)) File.Delete(PartPath); }
            catch (IOException) { }
        }

        void Fail(ErrorKind kind, string message)
        {
            ErrorKind = kind;
            Error = message;
            Set(RunnerState.Failed, message, Fraction, -1);
        }

        void Set(RunnerState state, string description, double fraction, double eta)
        {
            Action<JobRunner> handler;
            lock (gate)
            {
                if (IsDone && state != State) return;  // terminal states are final
                State = state;
                Description = description;
                Fraction = Math.Max(0, Math.Min(1, fraction));
                EtaSeconds = eta;
                handler = Changed;
            }
            if (handler != null) handler(this);
        }
    }
}
