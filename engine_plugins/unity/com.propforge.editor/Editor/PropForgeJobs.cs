// Running jobs and their history. Each job is a PropForge.Client.JobRunner on a worker task; its
// reports are marshalled to the main thread, shown through Unity's Progress API (with cancel) and in
// the PropForge window. Jobs survive a domain reload (script recompile) by being re-attached from
// their last event; history lives in Library/PropForge (per project, not in Assets, not committed).
using System;
using System.Collections.Generic;
using System.IO;
using System.Threading.Tasks;
using PropForge.Client;
using UnityEditor;
using UnityEngine;

namespace PropForge.Editor
{
    internal sealed class HistoryEntry
    {
        public string JobId = "";
        public string Source = "";     // asset path (or absolute path) of the image
        public string Output = "";     // Assets/PropForge/Generated/<name>.glb
        public string Prefab = "";     // Assets/PropForge/Generated/<name>.prefab
        public JobOptions Options = new JobOptions();
        public string State = "pending";  // pending | done | failed | cancelled
        public string Error = "";
        public string Time = "";
        public string Sha256 = "";
        public long LastSequence;
        public int ProgressId = -1;

        public Dictionary<string, object> ToJson()
        {
            var d = new Dictionary<string, object>();
            d["jobId"] = JobId; d["source"] = Source; d["output"] = Output; d["prefab"] = Prefab;
            d["options"] = Options.ToJson(); d["state"] = State; d["error"] = Error; d["time"] = Time;
            d["sha256"] = Sha256; d["lastSequence"] = LastSequence; d["progressId"] = ProgressId;
            return d;
        }

        public static HistoryEntry FromJson(Dictionary<string, object> d)
        {
            var e = new HistoryEntry();
            e.JobId = Json.GetString(d, "jobId"); e.Source = Json.GetString(d, "source");
            e.Output = Json.GetString(d, "output"); e.Prefab = Json.GetString(d, "prefab");
            e.Options = JobOptions.FromJson(Json.GetObject(d, "options")); e.State = Json.GetString(d, "state", "failed");
            e.Error = Json.GetString(d, "error"); e.Time = Json.GetString(d, "time"); e.Sha256 = Json.GetString(d, "sha256");
            e.LastSequence = Json.GetLong(d, "lastSequence"); e.ProgressId = (int)Json.GetLong(d, "progressId", -1);
            return e;
        }
    }

    [InitializeOnLoad]
    internal static class PropForgeJobs
    {
        sealed class Tracked
        {
            public JobRunner Runner;
            public HistoryEntry Entry;
            public PlacementTarget Placement;
            public bool Finalized;
        }

        const int HistoryLimit = 100;
        static readonly List<Tracked> Active = new List<Tracked>();
        public static readonly List<HistoryEntry> History = new List<HistoryEntry>();
        public static string Message = "";
        public static bool MessageIsError;
        public static event Action Changed;

        static string HistoryFile { get { return Path.Combine(PropForgeSettings.StateFolder, "history.json"); } }

        static PropForgeJobs()
        {
            LoadHistory();
            AssemblyReloadEvents.beforeAssemblyReload += SaveHistory;
            EditorApplication.quitting += SaveHistory;
            EditorApplication.delayCall += ReattachPending;
        }

        public static IEnumerable<JobRunner> Running
        {
            get { foreach (var t in Active) yield return t.Runner; }
        }

        /// <summary>Starts a job for an image (asset path or absolute path).</summary>
        public static void Generate(string imagePath, JobOptions options, PlacementTarget placement)
        {
            string full = Path.IsPathRooted(imagePath) ? imagePath : Path.Combine(PropForgeSettings.ProjectRoot, imagePath);
            byte[] bytes;
            try { bytes = File.ReadAllBytes(full); }
            catch (Exception e) { Report("cannot read " + imagePath + ": " + e.Message, true); return; }
            var entry = new HistoryEntry
            {
                Source = imagePath,
                Output = UniqueOutput(imagePath),
                Options = options.Clone(),
                Time = DateTime.Now.ToString("yyyy-MM-dd HH:mm:ss"),
            };
            var client = PropForgeSettings.NewClient();
            var runner = new JobRunner(client, bytes, Path.GetFileName(imagePath), options, PropForgeSettings.DownloadFolder,
                Path.Combine(PropForgeSettings.ProjectRoot, entry.Output));
            History.Insert(0, entry);
            Start(new Tracked { Runner = runner, Entry = entry, Placement = placement });
            Report("submitting " + Path.GetFileName(imagePath) + "...", false);
        }

        public static void Cancel(JobRunner runner)
        {
            runner.Cancel();
        }

        static void Start(Tracked t)
        {
            string name = Path.GetFileName(t.Entry.Output);
            t.Entry.ProgressId = Progress.Start("PropForge " + name, "submitting", Progress.Options.None);
            Progress.RegisterCancelCallback(t.Entry.ProgressId, () => { t.Runner.Cancel(); return true; });
            t.Runner.Changed += r => MainThread.Post(() => OnChanged(t));
            Active.Add(t);
            SaveHistory();
            Task.Run(() => t.Runner.RunAsync());
        }

        static void OnChanged(Tracked t)
        {
            var r = t.Runner;
            t.Entry.JobId = r.JobId ?? "";
            t.Entry.LastSequence = r.LastSequence;
            int id = t.Entry.ProgressId;
            bool live = Progress.Exists(id) && Progress.GetStatus(id) == Progress.Status.Running;
            if (!r.IsDone)
            {
                if (live) Progress.Report(id, (float)r.Fraction, r.State + ": " + r.Description);
                RaiseChanged();
                return;
            }
            if (t.Finalized) return;
            t.Finalized = true;
            Active.Remove(t);
            string name = Path.GetFileName(t.Entry.Output);
            if (r.State == RunnerState.Succeeded)
            {
                t.Entry.State = "done";
                t.Entry.Sha256 = r.Download.Sha256;
                if (live) Progress.Finish(id, Progress.Status.Succeeded);
                Import(t, name);
            }
            else if (r.State == RunnerState.Failed)
            {
                t.Entry.State = "failed";
                t.Entry.Error = r.Error;
                if (live) Progress.Finish(id, Progress.Status.Failed);
                Report(name + ": " + r.Error, true);
            }
            else
            {
                t.Entry.State = "cancelled";
                if (live) Progress.Finish(id, Progress.Status.Canceled);
                Report(name + ": cancelled", false);
            }
            SaveHistory();
            RaiseChanged();
        }

        static void Import(Tracked t, string name)
        {
            string message;
            var prefab = PropImporter.Import(t.Entry.Output, out message);
            if (prefab == null) { Report(message, true); return; }
            t.Entry.Prefab = AssetDatabase.GetAssetPath(prefab);
            if (t.Placement != null)
            {
                string why = Placement.Place(prefab, t.Placement);
                message += why.Length == 0 ? "; placed in the scene (Undo reverts)" : "; not placed: " + why;
            }
            Report(message, false);
        }

        /// <summary>Re-runs a history entry with exactly its options (same seed).</summary>
        public static void Rerun(HistoryEntry e, PlacementTarget placement)
        {
            Generate(e.Source, e.Options, placement);
        }

        static string UniqueOutput(string source)
        {
            string stem = MakeSafe(Path.GetFileNameWithoutExtension(source));
            string path = PropForgeSettings.GeneratedFolder + "/" + stem + ".glb";
            for (int n = 2; TakenByOther(path, source); n++)
                path = PropForgeSettings.GeneratedFolder + "/" + stem + "_" + n + ".glb";
            return path;
        }

        static bool TakenByOther(string output, string source)
        {
            foreach (var e in History)
                if (e.Output == output && e.Source != source) return true;
            return false;
        }

        static string MakeSafe(string s)
        {
            foreach (char c in Path.GetInvalidFileNameChars()) s = s.Replace(c, '_');
            return s.Length > 0 ? s : "prop";
        }

        public static void Report(string message, bool isError)
        {
            Message = message;
            MessageIsError = isError;
            if (isError) Debug.LogWarning("PropForge: " + message);
            RaiseChanged();
        }

        static void RaiseChanged()
        {
            var h = Changed;
            if (h != null) h();
        }

        // ---- persistence (Library/PropForge/history.json, written atomically) ----

        public static void SaveHistory()
        {
            while (History.Count > HistoryLimit) History.RemoveAt(History.Count - 1);
            var list = new List<object>();
            foreach (var e in History) list.Add(e.ToJson());
            try
            {
                Directory.CreateDirectory(PropForgeSettings.StateFolder);
                string tmp = HistoryFile + ".tmp";
                File.WriteAllText(tmp, Json.Serialize(list));
                JobRunner.MoveIntoPlace(tmp, HistoryFile);
            }
            catch (IOException ex) { Debug.LogWarning("PropForge: cannot save history: " + ex.Message); }
        }

        static void LoadHistory()
        {
            History.Clear();
            if (!File.Exists(HistoryFile)) return;
            try
            {
                var list = Json.Parse(File.ReadAllText(HistoryFile)) as List<object>;
                if (list == null) return;
                foreach (object o in list)
                {
                    var d = o as Dictionary<string, object>;
                    if (d != null) History.Add(HistoryEntry.FromJson(d));
                }
            }
            catch (Exception ex) { Debug.LogWarning("PropForge: ignoring unreadable history: " + ex.Message); }
        }

        /// <summary>After a domain reload or an editor restart: follow unfinished jobs again from their last event.</summary>
        static void ReattachPending()
        {
            foreach (var e in History)
            {
                if (e.State != "pending") continue;
                if (e.ProgressId >= 0 && Progress.Exists(e.ProgressId)) Progress.Remove(e.ProgressId);
                if (e.JobId.Length == 0)
                {
                    e.State = "failed";
                    e.Error = "interrupted before the server accepted the job";
                    continue;
                }
                var runner = JobRunner.Attach(PropForgeSettings.NewClient(), e.JobId, e.LastSequence, Path.GetFileName(e.Source),
                    e.Options, PropForgeSettings.DownloadFolder, Path.Combine(PropForgeSettings.ProjectRoot, e.Output));
                Start(new Tracked { Runner = runner, Entry = e, Placement = null });
            }
            SaveHistory();
        }
    }
}
