// Console test of PropForge.Client (no Unity): offline checks of the parsers and pixel conversions,
// then, with --server, the plugin's whole job flow against a real `propforge serve`.
// Build: mcs -langversion:7.2 -r:System.Net.Http.dll -r:PropForge.Client.dll -out:ConsoleTest.exe Program.cs
// Run:   mono ConsoleTest.exe [--server http://127.0.0.1:8480 --token T --image img.png --work DIR]
// Prints "ok: ..." per check and one final "RESULT {json}" line; exit code 1 on the first failure.
using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using System.Text;
using System.Threading;
using System.Threading.Tasks;
using PropForge.Client;

namespace PropForge.ConsoleTest
{
    sealed class CheckFailed : Exception
    {
        public CheckFailed(string m) : base(m) { }
    }

    static class Program
    {
        static readonly Dictionary<string, object> Summary = new Dictionary<string, object>();

        static int Main(string[] args)
        {
            var a = ParseArgs(args);
            // A hang must fail with a diagnosis, not hit the caller's timeout silently.
            int deadline = a.ContainsKey("deadline") ? int.Parse(a["deadline"]) : 300;
            var watchdog = new Thread(() =>
            {
                Thread.Sleep(deadline * 1000);
                Console.WriteLine("FAIL: still running after " + deadline + " s; last step done: " + lastStep);
                Console.WriteLine("RESULT {\"passed\":false,\"error\":\"timeout\"}");
                Console.Out.Flush();
                Environment.Exit(2);
            });
            watchdog.IsBackground = true;
            watchdog.Start();
            try
            {
                OfflineChecks();
                if (a.ContainsKey("server")) LiveChecks(a).GetAwaiter().GetResult();
                Summary["passed"] = true;
                Console.WriteLine("RESULT " + Json.Serialize(Summary));
                return 0;
            }
            catch (Exception e)
            {
                Console.WriteLine("FAIL: " + e.Message);
                if (!(e is CheckFailed)) Console.WriteLine(e);
                Summary["passed"] = false;
                Summary["error"] = e.Message;
                Console.WriteLine("RESULT " + Json.Serialize(Summary));
                return 1;
            }
        }

        static Dictionary<string, string> ParseArgs(string[] args)
        {
            var d = new Dictionary<string, string>();
            for (int i = 0; i + 1 < args.Length; i += 2)
            {
                if (!args[i].StartsWith("--")) throw new ArgumentException("unexpected argument " + args[i]);
                d[args[i].Substring(2)] = args[i + 1];
            }
            return d;
        }

        static void Check(bool cond, string what)
        {
            if (!cond) throw new CheckFailed(what);
        }

        static readonly System.Diagnostics.Stopwatch Clock = System.Diagnostics.Stopwatch.StartNew();

        static volatile string lastStep = "(none)";

        static void Ok(string what) { lastStep = what; Console.WriteLine("ok: " + what + " [" + Clock.Elapsed.TotalSeconds.ToString("F1") + " s]"); }

        // ------------------------------------------------------------------ offline

        static void OfflineChecks()
        {
            CheckSse();
            CheckJson();
            CheckEvents();
            CheckMaps();
            CheckNaming();
            CheckErrors();
        }

        static void CheckSse()
        {
            string stream = "\uFEFF: keepalive\r\nid: 1\r\nevent: queued\r\ndata: {\"sequence\":\"1\",\"queued\":{\"position\":2}}\r\n\r\n"
                + "id: 2\nevent: progress\ndata: {\"sequence\":\"2\",\n"
                + "data: \"progress\":{\"stage\":\"sample \u00e9t\u00e9\",\"step\":3,\"total\":12,\"fraction\":0.5,\"etaSeconds\":4.2}}\n\n"
                + ": keepalive\n\n"
                + "id: 3\revent: finished\rdata: {\"sequence\":\"3\",\"finished\":{\"resultSize\":\"1234\",\"resultSha256\":\"ab\"}}\r\r";
            byte[] bytes = Encoding.UTF8.GetBytes(stream);
            // Every split point must give the same events: network chunks cut lines, CRLF and UTF-8 anywhere.
            for (int cut = 0; cut <= bytes.Length; cut++)
            {
                var p = new SseParser();
                var evs = p.Feed(bytes, 0, cut);
                evs.AddRange(p.Feed(bytes, cut, bytes.Length - cut));
                Check(evs.Count == 3, "SSE: 3 events at cut " + cut + ", got " + evs.Count);
                Check(evs[0].Event == "queued" && evs[0].Id == "1", "SSE: first event queued/1 at cut " + cut);
                Check(evs[1].Data.Contains("\n") && evs[1].Data.Contains("sample \u00e9t\u00e9"), "SSE: multi-line data + UTF-8 at cut " + cut);
                Check(evs[2].Event == "finished" && p.LastEventId == "3", "SSE: CR-only line ends at cut " + cut);
                Check(p.Comments == 2, "SSE: 2 comments at cut " + cut);
            }
            var one = new SseParser();
            var all = new List<SseEvent>();
            foreach (byte b in bytes) all.AddRange(one.Feed(new[] { b }, 0, 1));
            Check(all.Count == 3, "SSE: byte-by-byte feeding");
            Ok("SSE parser (all split points, CRLF/CR/LF, comments, multi-line data, UTF-8)");
        }

        static void CheckJson()
        {
            var d = Json.ParseObject("{\"a\": [1, 2.5, -3e2, true, false, null], \"s\": \"q\\\"\\\\\\n\\u00e9\", \"n\": {}}");
            var list = (List<object>)d["a"];
            Check(list.Count == 6 && (double)list[2] == -300.0 && (bool)list[3] && list[5] == null, "JSON: array values");
            Check((string)d["s"] == "q\"\\\n\u00e9", "JSON: string escapes");
            string again = Json.Serialize(d);
            Check(Json.Serialize(Json.ParseObject(again)) == again, "JSON: round trip");
            bool threw = false;
            try { Json.Parse("{\"a\": 1,}"); } catch (FormatException) { threw = true; }
            Check(threw, "JSON: trailing comma is an error");
            var o = new JobOptions { Backend = "relief", Quality = "draft", Faces = 5000, TextureSize = 512, Height = 1.5f, Seed = 18446744073709551615UL, HasSeed = true, AlphaMode = "MASK" };
            var back = JobOptions.FromJson(Json.ParseObject(o.ToString()));
            Check(back.Seed == o.Seed && back.HasSeed && back.Faces == 5000 && back.Quality == "draft" && Math.Abs(back.Height - 1.5f) < 1e-6
                && back.AlphaMode == "MASK",
                "JSON: JobOptions round trip (uint64 seed as string)");
            Check(!new JobOptions().ToJson().ContainsKey("seed"), "JSON: seed left out unless HasSeed");
            var lo = JobOptions.FromJson(Json.ParseObject(new JobOptions { Lods = 2, Collision = "convex" }.ToString()));
            Check(lo.Lods == 2 && lo.Collision == "convex", "JSON: JobOptions lods/collision round trip");
            Check(!new JobOptions { Collision = "none" }.ToJson().ContainsKey("collision") && !new JobOptions().ToJson().ContainsKey("lods"),
                "JSON: lods/collision left out at their defaults");
            Ok("JSON reader/writer and JobOptions mapping");
        }

        static SseEvent Frame(string ev, string data)
        {
            return new SseEvent { Event = ev, Data = data, Id = "" };
        }

        static void CheckEvents()
        {
            var p = JobEvent.FromSse(Frame("progress", "{\"sequence\":\"7\",\"jobId\":\"j\",\"progress\":{\"stage\":\"sample\",\"step\":3,\"total\":12,\"fraction\":0.25,\"etaSeconds\":9.5,\"message\":\"m\"}}"));
            Check(p.Sequence == 7 && p.Kind == "progress" && p.Step == 3 && p.Total == 12 && Math.Abs(p.Fraction - 0.25) < 1e-9 && p.EtaSeconds == 9.5, "events: progress fields");
            Check(p.Describe() == "sample 3/12, ETA 10 s - m", "events: describe progress, got '" + p.Describe() + "'");
            var f = JobEvent.FromSse(Frame("message", "{\"sequence\":\"9\",\"failed\":{\"reason\":\"bad\",\"code\":\"INTERNAL\"}}"));
            Check(f.Kind == "failed" && f.IsTerminal && f.Reason == "bad" && f.Code == "INTERNAL", "events: kind from JSON oneof");
            var fin = JobEvent.FromSse(Frame("finished", "{\"sequence\":\"10\",\"finished\":{\"resultSize\":\"123456789012\",\"resultSha256\":\"x\",\"cached\":true}}"));
            Check(fin.ResultSize == 123456789012L && fin.Cached && fin.IsTerminal, "events: finished with int64 as string");
            var q = JobEvent.FromSse(new SseEvent { Event = "queued", Data = "{\"queued\":{}}", Id = "4" });
            Check(q.Sequence == 4 && q.Position == 0, "events: sequence from SSE id when JSON omits it; position 0 omitted");
            Ok("JobEvent mapping of every kind");
        }

        static void CheckMaps()
        {
            // two pixels: (R, G=rough, B=metal, A)
            byte[] mr = { 0, 51, 255, 255, 9, 255, 0, 255 };
            var ms = MaterialMaps.ToMetallicSmoothness(mr, 1.0, 1.0);
            Check(ms[0] == 255 && ms[3] == 204 && ms[4] == 0 && ms[7] == 0, "maps: metallic/smoothness from G/B");
            var half = MaterialMaps.ToMetallicSmoothness(mr, 0.5, 0.5);
            Check(half[0] == 128 && half[3] == 255 - 26, "maps: factors multiply");
            byte[] ao = { 100, 0, 0, 255, 200, 0, 0, 255 };
            var mask = MaterialMaps.ToHdrpMaskMap(mr, ao, 1.0, 1.0);
            Check(mask[0] == 255 && mask[1] == 100 && mask[2] == 255 && mask[3] == 204 && mask[5] == 200, "maps: HDRP mask R=metal G=AO B=detail A=smooth");
            var mask2 = MaterialMaps.ToHdrpMaskMap(mr, null, 1.0, 1.0);
            Check(mask2[1] == 255, "maps: no occlusion -> AO 1");
            bool threw = false;
            try { MaterialMaps.ToMetallicSmoothness(new byte[3], 1, 1); } catch (ArgumentException) { threw = true; }
            Check(threw, "maps: non-RGBA input is rejected");
            Ok("metallicRoughness -> URP/Built-in metallic-smoothness and HDRP mask map");
        }

        static void CheckNaming()
        {
            Check(PropNaming.LodIndex("crate_LOD0") == 0 && PropNaming.LodIndex("crate_LOD2") == 2 && PropNaming.LodIndex("crate") == -1
                && PropNaming.LodIndex("LODGE") == -1, "naming: LOD suffixes");
            Check(PropNaming.IsCollision("crate-colonly") && PropNaming.IsCollision("UCX_crate") && PropNaming.IsCollision("crate_collider")
                && !PropNaming.IsCollision("crate_LOD0") && !PropNaming.IsCollision("column"), "naming: collision meshes");
            var t = PropNaming.LodTransitions(3);
            Check(t.Length == 3 && t[0] > t[1] && t[1] > t[2], "naming: LOD transitions decrease");
            Ok("node naming conventions (LOD levels, collision mesh)");
        }

        static void CheckErrors()
        {
            var e401 = PropForgeClient.ProblemToException(401, "{\"title\":\"Unauthorized\",\"status\":401,\"detail\":\"missing or wrong bearer token\",\"code\":\"UNAUTHENTICATED\"}");
            Check(e401.Kind == ErrorKind.Unauthorized && e401.Message.Contains("token") && e401.Code == "UNAUTHENTICATED", "errors: 401 -> Unauthorized with detail");
            Check(PropForgeClient.ProblemToException(429, "not json").Kind == ErrorKind.Busy, "errors: 429 -> Busy even without problem JSON");
            Check(PropForgeClient.ProblemToException(500, "").Kind == ErrorKind.Server, "errors: 500 -> Server");
            Check(PropForgeClient.NormalizeAddress("127.0.0.1:8480").ToString() == "http://127.0.0.1:8480/", "address: bare host:port");
            Check(PropForgeClient.NormalizeAddress("https://h.example/x/").ToString() == "https://h.example/", "address: https with path");
            bool threw = false;
            try { PropForgeClient.NormalizeAddress("ftp://h"); } catch (PropForgeException) { threw = true; }
            Check(threw, "address: ftp is refused");
            Ok("problem JSON -> error kinds; server address normalisation");
        }

        // ------------------------------------------------------------------ live, against `propforge serve`

        static JobOptions SmallOptions(ulong seed)
        {
            return new JobOptions { Backend = "relief", Faces = 2000, TextureSize = 256, Height = 0.75f, Seed = seed, HasSeed = true };
        }

        static async Task LiveChecks(Dictionary<string, string> a)
        {
            string server = a["server"];
            string token = a.ContainsKey("token") ? a["token"] : null;
            string imagePath = a["image"];
            string work = a["work"];
            byte[] image = File.ReadAllBytes(imagePath);
            string downloads = Path.Combine(work, "Library", "PropForge", "Downloads");
            string generated = Path.Combine(work, "Assets", "PropForge", "Generated");
            var ct = CancellationToken.None;

            using (var client = new PropForgeClient(server, token))
            {
                Check(await client.IsReadyAsync(ct), "server is ready");
                var backends = await client.ListBackendsAsync(ct);
                Check(backends.Any(b => b.Name == "relief" && b.Available), "relief backend listed and available");
                Ok("health/ready and backend list");

                await CheckErrorsLive(server, token, client, image);

                // The whole plugin flow through JobRunner, recording every event.
                var events = new List<JobEvent>();
                string output = Path.Combine(generated, "crate.glb");
                var runner = new JobRunner(client, image, Path.GetFileName(imagePath), SmallOptions(7), downloads, output);
                var seen = new List<string>();
                runner.Changed += r => { lock (seen) seen.Add(r.State + ":" + r.Description); };
                await runner.RunAsync();
                Check(runner.State == RunnerState.Succeeded, "job succeeded, got " + runner.State + " " + runner.Error);
                Check(File.Exists(output), "GLB moved into Assets/PropForge/Generated");
                Check(Directory.GetFiles(downloads, "*.part").Length == 0, "no partial download left behind");
                Check(seen.Any(s => s.StartsWith("Running:")), "runner reported running progress");

                var job = await client.GetJobAsync(runner.JobId, ct);
                Check(job.State == JobStates.Succeeded, "server says SUCCEEDED, got " + job.State);
                long size = new FileInfo(output).Length;
                string sha = PropForgeClient.Sha256File(output);
                Check(size == job.ResultSize && size == runner.Finished.ResultSize, "size " + size + " == server's " + job.ResultSize);
                Check(sha == job.ResultSha256 && sha == runner.Finished.ResultSha256, "sha256 " + sha + " == server's " + job.ResultSha256);
                Ok("submit -> events -> download -> verify -> place (" + size + " bytes, sha256 " + sha.Substring(0, 12) + ")");
                Summary["jobId"] = runner.JobId;
                Summary["resultSize"] = size;
                Summary["resultSha256"] = sha;

                // Replay the event feed from the start: sequences 1..n without gaps, fractions in range, one terminal event.
                await client.WatchAsync(runner.JobId, 0, e => events.Add(e), ct);
                Check(events.Count >= 2, "event feed has events");
                for (int i = 0; i < events.Count; i++)
                    Check(events[i].Sequence == i + 1, "event sequence " + events[i].Sequence + " at index " + i + " (no gaps, from 1)");
                Check(events.Last().Kind == JobEvent.KindFinished && events.Count(e => e.IsTerminal) == 1, "one terminal event, last");
                Check(events.Where(e => e.Kind == JobEvent.KindProgress).All(e => e.Fraction >= 0 && e.Fraction <= 1), "progress fractions in 0..1");
                Check(events.Any(e => e.Kind == JobEvent.KindStageStarted || e.Kind == JobEvent.KindProgress), "stage/progress events present");
                Summary["events"] = events.Count;
                // Resume in the middle: only later events come.
                var tail = new List<JobEvent>();
                long mid = events.Count / 2;
                await client.WatchAsync(runner.JobId, mid, e => tail.Add(e), ct);
                Check(tail.Count == events.Count - mid && tail[0].Sequence == mid + 1, "Last-Event-ID resume gives exactly the later events");
                Ok("event feed: " + events.Count + " events, gap-free, resumable");

                // Re-attach after a domain reload / editor restart, every event already seen: the runner
                // learns the outcome from the job record and downloads.
                var again = JobRunner.Attach(client, runner.JobId, events.Count, "crate.png", SmallOptions(7), downloads,
                    Path.Combine(generated, "crate_reattached.glb"));
                await again.RunAsync();
                Check(again.State == RunnerState.Succeeded && again.Download.Sha256 == sha,
                    "re-attached runner finished the job: " + again.State + " " + again.Error);
                Ok("re-attach after all events were seen: outcome from GET /v1/jobs/{id}, download verified");

                CheckGlb(output);
                await CheckResume(client, runner.JobId, downloads, output, size, sha);
                await CheckNetworkDrops(server, token, runner.JobId, events.Count, downloads, size, sha);

                // Re-run with the same seed (history "re-run"): same result bytes.
                var rerun = new JobRunner(client, image, Path.GetFileName(imagePath), SmallOptions(7), downloads, Path.Combine(generated, "crate_rerun.glb"));
                await rerun.RunAsync();
                Check(rerun.State == RunnerState.Succeeded, "re-run succeeded: " + rerun.Error);
                Check(rerun.Download.Sha256 == sha, "re-run with the same seed gives the same GLB");
                Summary["rerunCached"] = rerun.Finished.Cached;
                Ok("re-run with the same seed: identical sha256 (cached: " + rerun.Finished.Cached + ")");

                await CheckLodsAndCollider(client, image, downloads, generated);
                await CheckCancel(client, image, downloads, generated);
                await CheckBadImage(client, downloads, generated);
            }
        }

        static async Task CheckErrorsLive(string server, string token, PropForgeClient client, byte[] image)
        {
            var ct = CancellationToken.None;
            if (!string.IsNullOrEmpty(token))
            {
                using (var bad = new PropForgeClient(server, token + "-wrong"))
                {
                    var e = await Expect(() => bad.SubmitAsync(image, "x.png", SmallOptions(1), ct));
                    Check(e.Kind == ErrorKind.Unauthorized && e.HttpStatus == 401, "wrong token -> Unauthorized 401, got " + e.Kind + " " + e.HttpStatus);
                    Check(await bad.IsReadyAsync(ct), "health needs no token");
                }
                Ok("wrong token -> clear 'rejected the token' error");
            }
            var nf = await Expect(() => client.GetJobAsync("no-such-job", ct));
            Check(nf.Kind == ErrorKind.NotFound && nf.HttpStatus == 404, "unknown job -> NotFound");
            var bo = await Expect(() => client.SubmitAsync(image, "x.png", new JobOptions { Backend = "relief", TextureSize = 300 }, ct));
            Check(bo.Kind == ErrorKind.BadRequest && bo.HttpStatus == 400 && bo.Message.ToLowerInvariant().Contains("texture"), "bad option -> 400 naming the field: " + bo.Message);
            using (var down = new PropForgeClient("127.0.0.1:1"))
            {
                down.RequestTimeout = TimeSpan.FromSeconds(5);
                var de = await Expect(() => down.IsReadyAsync(ct));
                Check(de.Kind == ErrorKind.Network && de.Message.Contains("cannot reach"), "server down -> Network 'cannot reach': " + de.Message);
            }
            Ok("unknown job 404, bad option 400 naming the field, server down -> clear errors");
        }

        static async Task<PropForgeException> Expect<T>(Func<Task<T>> call)
        {
            try { await call(); }
            catch (PropForgeException e) { return e; }
            throw new CheckFailed("expected a PropForgeException");
        }

        static void CheckGlb(string path)
        {
            var doc = GlbDocument.ReadFile(path);
            var mats = doc.Materials();
            Check(mats.Count >= 1 && doc.MeshCount >= 1, "GLB has a mesh and a material");
            var m = mats[0];
            Check(m.BaseColorImage >= 0 && m.MetallicRoughnessImage >= 0, "material has baseColor and metallicRoughness textures");
            string mime;
            var png = doc.ImageBytes(m.BaseColorImage, out mime);
            Check(png != null && png.Length > 8 && (mime == "image/png" || mime == "image/jpeg"), "baseColor image is embedded PNG/JPEG");
            Check(png[0] == 0x89 && png[1] == (byte)'P' || png[0] == 0xFF && png[1] == 0xD8, "image bytes carry a PNG/JPEG signature");
            Check(doc.AssetExtras().Count > 0, "asset.extras carries generation metadata");
            Summary["nodes"] = doc.NodeNames().Cast<object>().ToList();
            Ok("GLB readable by the editor importer (material " + m.AlphaMode + ", " + doc.NodeNames().Count + " nodes)");
        }

        /// <summary>A job with LODs and a convex collider: the node names PropImporter turns into a LODGroup and a MeshCollider.</summary>
        static async Task CheckLodsAndCollider(PropForgeClient client, byte[] image, string downloads, string generated)
        {
            var options = SmallOptions(11);
            options.Lods = 2;
            options.Collision = "convex";
            string output = Path.Combine(generated, "crate_lods.glb");
            var runner = new JobRunner(client, image, "crate.png", options, downloads, output);
            await runner.RunAsync();
            Check(runner.State == RunnerState.Succeeded, "LOD job succeeded: " + runner.State + " " + runner.Error);
            var names = GlbDocument.ReadFile(output).NodeNames();
            var levels = names.Select(PropNaming.LodIndex).Where(i => i >= 0).OrderBy(i => i).ToList();
            Check(levels.SequenceEqual(new[] { 0, 1, 2 }), "LOD levels 0, 1, 2 in node names: " + string.Join(", ", names));
            var colliders = names.Where(PropNaming.IsCollision).ToList();
            Check(colliders.Count == 1 && colliders[0].EndsWith("-convcolonly"), "one convex collision node: " + string.Join(", ", names));
            var job = await client.GetJobAsync(runner.JobId, CancellationToken.None);
            Check(job.Options.Lods == 2 && job.Options.Collision == "convex", "the job record echoes lods/collision");
            Summary["lodNodes"] = names.Cast<object>().ToList();
            Ok("LODs + convex collider: nodes " + string.Join(", ", names));
        }

        static async Task CheckResume(PropForgeClient client, string jobId, string downloads, string output, long size, string sha)
        {
            var ct = CancellationToken.None;
            string final = Path.Combine(downloads, "..", "final.glb");
            byte[] full = File.ReadAllBytes(output);
            // A broken earlier download: the first 40 % are on disk.
            string part = Path.Combine(downloads, "resume.glb.part");
            int have = (int)(size * 4 / 10);
            File.WriteAllBytes(part, full.Take(have).ToArray());
            var r = await client.DownloadAsync(jobId, part, sha, null, ct);
            Check(r.ResumedFrom == have && r.Requests == 1, "download resumed from byte " + have + " (got " + r.ResumedFrom + ")");
            Check(r.Size == size && r.Sha256 == sha && PropForgeClient.Sha256File(part) == sha, "resumed download is complete and verified");
            JobRunner.MoveIntoPlace(part, final);
            Check(!File.Exists(part) && File.Exists(final), "moved into place");
            // A corrupt partial file is caught by the sha256 check and deleted, never moved into the project.
            var bad = full.Take(have).ToArray();
            bad[have / 2] ^= 0xFF;
            File.WriteAllBytes(part, bad);
            var e = await Expect(() => client.DownloadAsync(jobId, part, sha, null, ct));
            Check(e.Kind == ErrorKind.Integrity && !File.Exists(part), "corrupt partial -> integrity error, part file deleted");
            var again = await client.DownloadAsync(jobId, part, sha, null, ct);
            Check(again.ResumedFrom == 0 && again.Sha256 == sha, "fresh download after the integrity failure");
            File.Delete(part);
            Ok("Range resume from " + have + " of " + size + " bytes; corrupt partial detected and discarded");
        }

        /// <summary>Real connection drops (through FlakyProxy): the event feed reconnects with Last-Event-ID and
        /// loses nothing; the download resumes with Range after the connection dies mid-body.</summary>
        static async Task CheckNetworkDrops(string server, string token, string jobId, int eventCount, string downloads, long size, string sha)
        {
            var ct = CancellationToken.None;
            using (var proxy = new FlakyProxy(new Uri(server).Port))
            {
                using (var client = new PropForgeClient("127.0.0.1:" + proxy.Port, token))
                {
                    proxy.CutNextConnectionAfter(1200);  // headers + a few events
                    var got = new List<JobEvent>();
                    await client.WatchAsync(jobId, 0, e => got.Add(e), ct);
                    Check(proxy.Connections >= 2, "the event stream was really cut and reopened (" + proxy.Connections + " connections)");
                    Check(got.Count == eventCount, "all " + eventCount + " events after the drop, got " + got.Count);
                    for (int i = 0; i < got.Count; i++) Check(got[i].Sequence == i + 1, "no gap or repeat after reconnect at " + i);
                }
                using (var client = new PropForgeClient("127.0.0.1:" + proxy.Port, token))
                {
                    int before = proxy.Connections;
                    proxy.CutNextConnectionAfter((int)(size / 2));
                    string part = Path.Combine(downloads, "dropped.glb.part");
                    var r = await client.DownloadAsync(jobId, part, sha, null, ct);
                    Check(proxy.Connections - before >= 2 && r.Requests >= 2, "download was cut and retried (" + r.Requests + " requests)");
                    Check(r.ResumedFrom > 0 && r.ResumedFrom < size, "second request resumed from byte " + r.ResumedFrom);
                    Check(r.Size == size && r.Sha256 == sha, "resumed download verified");
                    File.Delete(part);
                    Summary["resumedFromAfterDrop"] = r.ResumedFrom;
                }
            }
            Ok("real connection drops: SSE reconnect loses nothing, download resumes with Range");
        }

        static async Task CheckCancel(PropForgeClient client, byte[] image, string downloads, string generated)
        {
            var ct = CancellationToken.None;
            // Occupy the worker(s) with a few jobs, then cancel the last one while it waits in the queue.
            var blockers = new List<JobInfo>();
            for (int i = 0; i < 3; i++)
                blockers.Add(await client.SubmitAsync(image, "blocker.png", new JobOptions { Backend = "relief", Faces = 20000, TextureSize = 1024, Seed = (ulong)(100 + i), HasSeed = true }, ct));
            string output = Path.Combine(generated, "cancelled.glb");
            var runner = new JobRunner(client, image, "cancel-me.png", SmallOptions(12345), downloads, output);
            var run = runner.RunAsync();
            var sw = System.Diagnostics.Stopwatch.StartNew();
            while (runner.JobId == null && sw.Elapsed.TotalSeconds < 30) await Task.Delay(10);
            Check(runner.JobId != null, "cancel test job was submitted");
            runner.Cancel();
            await run;
            Check(runner.State == RunnerState.Cancelled, "runner cancelled, got " + runner.State + " " + runner.Error);
            var job = await client.GetJobAsync(runner.JobId, ct);
            Check(job.State == JobStates.Cancelled, "server state CANCELLED, got " + job.State);
            Check(!File.Exists(output), "a cancelled job leaves nothing in Assets");
            var tail = new List<JobEvent>();
            await client.WatchAsync(runner.JobId, 0, e => tail.Add(e), ct);
            Check(tail.Last().Kind == JobEvent.KindCancelled, "event feed ends with 'cancelled'");
            foreach (var b in blockers) await client.CancelAsync(b.Id, ct);
            Ok("cancel: DELETE -> server CANCELLED, feed ends with 'cancelled', nothing imported");
        }

        static async Task CheckBadImage(PropForgeClient client, string downloads, string generated)
        {
            string output = Path.Combine(generated, "broken.glb");
            var runner = new JobRunner(client, Encoding.ASCII.GetBytes("this is not an image"), "broken.png", SmallOptions(1), downloads, output);
            await runner.RunAsync();
            Check(runner.State == RunnerState.Failed && runner.Error.Length > 0, "corrupt image -> Failed with a reason, got " + runner.State);
            Check(!File.Exists(output), "failed job leaves nothing in Assets");
            Summary["badImageError"] = runner.Error;
            Ok("corrupt image -> failed with: " + runner.Error);
        }
    }
}
