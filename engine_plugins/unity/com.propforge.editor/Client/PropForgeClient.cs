// Transport for the PropForge HTTP bridge (docs/http-api.md). No UnityEngine here: the editor
// layer calls this from background tasks and marshals results to the main thread itself.
using System;
using System.Collections.Generic;
using System.Globalization;
using System.IO;
using System.Net;
using System.Net.Http;
using System.Net.Http.Headers;
using System.Security.Cryptography;
using System.Text;
using System.Threading;
using System.Threading.Tasks;

namespace PropForge.Client
{
    /// <summary>Outcome of a (possibly resumed) result download.</summary>
    public sealed class DownloadResult
    {
        public long Size;
        public string Sha256 = "";
        public long ResumedFrom;   // bytes already on disk when the last request started (0 = fresh)
        public int Requests;       // HTTP requests it took
        public string ServerSha256 = "";  // what the server announced (X-Content-SHA256, else ETag)
    }

    public sealed class PropForgeClient : IDisposable
    {
        public const string DefaultAddress = "http://127.0.0.1:8480";

        readonly HttpClient http;
        readonly Uri baseUri;
        readonly string token;

        /// <summary>Timeout of the short requests (submit, get, cancel, health).</summary>
        public TimeSpan RequestTimeout = TimeSpan.FromSeconds(30);
        /// <summary>An event stream silent this long is dropped and resumed (server sends keepalives every 15 s).</summary>
        public TimeSpan IdleTimeout = TimeSpan.FromSeconds(45);
        /// <summary>Reconnects of the event stream / download in a row before giving up.</summary>
        public int MaxRetries = 5;

        public PropForgeClient(string address, string token = null, HttpMessageHandler handler = null)
        {
            baseUri = NormalizeAddress(address);
            this.token = string.IsNullOrEmpty(token) ? null : token.Trim();
            http = handler != null ? new HttpClient(handler) : new HttpClient();
            http.Timeout = Timeout.InfiniteTimeSpan;  // per-request timeouts below; streams are long-lived
        }

        /// <summary>"127.0.0.1:8480", "http://host:8480/" and "https://host" all become a base URI.</summary>
        public static Uri NormalizeAddress(string address)
        {
            string a = (address ?? "").Trim();
            if (a.Length == 0) a = DefaultAddress;
            if (a.IndexOf("://", StringComparison.Ordinal) < 0) a = "http://" + a;
            Uri u;
            if (!Uri.TryCreate(a, UriKind.Absolute, out u) || (u.Scheme != "http" && u.Scheme != "https"))
                throw new PropForgeException(ErrorKind.BadRequest, "server address '" + address + "' is not an http(s) address like 127.0.0.1:8480");
            return new Uri(u.GetLeftPart(UriPartial.Authority) + "/");
        }

        public void Dispose() { http.Dispose(); }

        // ------------------------------------------------------------------ simple requests

        public async Task<bool> IsReadyAsync(CancellationToken ct)
        {
            using (var resp = await SendAsync(HttpMethod.Get, "v2/health/ready", null, null, ct).ConfigureAwait(false))
                return resp.StatusCode == HttpStatusCode.OK;
        }

        public async Task<List<BackendInfo>> ListBackendsAsync(CancellationToken ct)
        {
            var d = await GetJsonAsync("v1/backends", ct).ConfigureAwait(false);
            var list = new List<BackendInfo>();
            foreach (object o in Json.GetList(d, "backends"))
            {
                var b = o as Dictionary<string, object>;
                if (b != null) list.Add(BackendInfo.FromJson(b));
            }
            return list;
        }

        public async Task<JobInfo> GetJobAsync(string jobId, CancellationToken ct)
        {
            return JobInfo.FromJson(await GetJsonAsync("v1/jobs/" + Esc(jobId), ct).ConfigureAwait(false));
        }

        /// <summary>DELETE /v1/jobs/{id}: the job is cancelled, or returned unchanged when already terminal.</summary>
        public async Task<JobInfo> CancelAsync(string jobId, CancellationToken ct)
        {
            using (var resp = await SendAsync(HttpMethod.Delete, "v1/jobs/" + Esc(jobId), null, null, ct).ConfigureAwait(false))
            {
                await EnsureOk(resp).ConfigureAwait(false);
                return JobInfo.FromJson(Json.ParseObject(await resp.Content.ReadAsStringAsync().ConfigureAwait(false)));
            }
        }

        /// <summary>POST /v1/jobs (multipart: `image` file + `options` JSON). Returns the queued job.</summary>
        public async Task<JobInfo> SubmitAsync(byte[] image, string imageName, JobOptions options, CancellationToken ct)
        {
            if (image == null || image.Length == 0)
                throw new PropForgeException(ErrorKind.BadRequest, "the image is empty");
            var form = new MultipartFormDataContent("----PropForge" + Guid.NewGuid().ToString("N"));
            var img = new ByteArrayContent(image);
            img.Headers.ContentType = new MediaTypeHeaderValue(MimeFor(imageName));
            img.Headers.ContentDisposition = new ContentDispositionHeaderValue("form-data")
            {
                Name = "\"image\"",
                FileName = "\"" + SafeFileName(imageName) + "\"",
            };
            form.Add(img);
            var opts = new StringContent(Json.Serialize((options ?? new JobOptions()).ToJson()), Encoding.UTF8, "application/json");
            opts.Headers.ContentDisposition = new ContentDispositionHeaderValue("form-data") { Name = "\"options\"" };
            form.Add(opts);
            using (var resp = await SendAsync(HttpMethod.Post, "v1/jobs", form, null, ct).ConfigureAwait(false))
            {
                await EnsureOk(resp).ConfigureAwait(false);
                return JobInfo.FromJson(Json.ParseObject(await resp.Content.ReadAsStringAsync().ConfigureAwait(false)));
            }
        }

        // ------------------------------------------------------------------ event stream

        /// <summary>
        /// Follows GET /v1/jobs/{id}/events until a terminal event, calling onEvent for each event with
        /// sequence &gt; afterSequence exactly once. A dropped or silent stream is resumed with Last-Event-ID.
        /// </summary>
        public async Task<JobEvent> WatchAsync(string jobId, long afterSequence, Action<JobEvent> onEvent, CancellationToken ct)
        {
            long last = afterSequence;
            int failures = 0;
            while (true)
            {
                ct.ThrowIfCancellationRequested();
                Exception lastError = null;
                try
                {
                    var headers = new Dictionary<string, string>();
                    headers["Accept"] = "text/event-stream";
                    if (last > 0) headers["Last-Event-ID"] = last.ToString(CultureInfo.InvariantCulture);
                    using (var resp = await SendAsync(HttpMethod.Get, "v1/jobs/" + Esc(jobId) + "/events", null, headers, ct, streaming: true).ConfigureAwait(false))
                    {
                        await EnsureOk(resp).ConfigureAwait(false);
                        var stream = await resp.Content.ReadAsStreamAsync().ConfigureAwait(false);
                        var parser = new SseParser();
                        var buf = new byte[16384];
                        while (true)
                        {
                            int n = await ReadWithIdleTimeout(stream, buf, resp, ct).ConfigureAwait(false);
                            if (n <= 0) break;  // server closed the stream (or it went silent)
                            foreach (SseEvent frame in parser.Feed(buf, 0, n))
                            {
                                JobEvent e;
                                try { e = JobEvent.FromSse(frame); }
                                catch (FormatException fe)
                                {
                                    throw new PropForgeException(ErrorKind.Server, "the server sent an unreadable event: " + fe.Message);
                                }
                                if (e.Sequence != 0 && e.Sequence <= last) continue;  // already seen before a reconnect
                                if (e.Sequence != 0) last = e.Sequence;
                                failures = 0;
                                if (onEvent != null) onEvent(e);
                                if (e.IsTerminal) return e;
                            }
                        }
                    }
                    // The stream ended without a terminal event after `last`: either a drop, or the job
                    // finished and its terminal event was seen before (re-attach after a reload).
                    var job = await GetJobAsync(jobId, ct).ConfigureAwait(false);
                    if (job.IsTerminal) return TerminalEvent(job, last);
                }
                catch (PropForgeException pe)
                {
                    if (pe.Kind != ErrorKind.Network) throw;
                    lastError = pe;
                }
                catch (OperationCanceledException)
                {
                    if (ct.IsCancellationRequested) throw;
                    lastError = new PropForgeException(ErrorKind.Network, "the event stream timed out");
                }
                catch (Exception ex) when (ex is IOException || ex is HttpRequestException || ex is ObjectDisposedException || ex is WebException)
                {
                    lastError = ex;
                }
                failures++;
                if (failures > MaxRetries)
                    throw new PropForgeException(ErrorKind.Network, "lost the event stream of job " + jobId + " at " + baseUri
                        + (lastError != null ? ": " + lastError.Message : ""), 0, "", lastError);
                await Task.Delay(Backoff(failures), ct).ConfigureAwait(false);
            }
        }

        /// <summary>The terminal event a finished job's feed ended with, rebuilt from the Job record.</summary>
        public static JobEvent TerminalEvent(JobInfo job, long sequence)
        {
            var e = new JobEvent();
            e.JobId = job.Id;
            e.Sequence = sequence;
            if (job.State == JobStates.Succeeded)
            {
                e.Kind = JobEvent.KindFinished;
                e.ResultSize = job.ResultSize;
                e.ResultSha256 = job.ResultSha256;
                e.Cached = job.Cached;
                e.Fraction = 1.0;
            }
            else if (job.State == JobStates.Failed)
            {
                e.Kind = JobEvent.KindFailed;
                e.Reason = job.Error;
                e.Code = job.ErrorCode;
            }
            else
            {
                e.Kind = JobEvent.KindCancelled;
            }
            return e;
        }

        async Task<int> ReadWithIdleTimeout(Stream stream, byte[] buf, HttpResponseMessage resp, CancellationToken ct)
        {
            var read = stream.ReadAsync(buf, 0, buf.Length, ct);
            using (var timer = CancellationTokenSource.CreateLinkedTokenSource(ct))
            {
                var idle = Task.Delay(IdleTimeout, timer.Token);
                var done = await Task.WhenAny(read, idle).ConfigureAwait(false);
                timer.Cancel();  // no 45 s timer left behind per chunk
                if (done == read)
                {
                    try { return await read.ConfigureAwait(false); }
                    catch (Exception e) when (e is IOException || e is HttpRequestException || e is WebException)
                    {   // the connection died mid-response: retryable, unlike a local disk error
                        ct.ThrowIfCancellationRequested();
                        throw new PropForgeException(ErrorKind.Network, "connection lost: " + Innermost(e).Message, 0, "", e);
                    }
                }
            }
            resp.Dispose();  // aborts the stuck read; the caller reconnects with Last-Event-ID
            ct.ThrowIfCancellationRequested();
            ObserveFault(read);
            return -1;
        }

        static void ObserveFault(Task t)
        {
            t.ContinueWith(x => { var ignored = x.Exception; }, TaskContinuationOptions.OnlyOnFaulted);
        }

        // ------------------------------------------------------------------ result download

        /// <summary>
        /// Downloads the GLB of a finished job into partPath, resuming from the bytes already there with
        /// `Range: bytes=N-`, retrying broken transfers, and checking size and sha256 against the server's
        /// (and against expectedSha256 when given). A file that fails the check is deleted.
        /// </summary>
        public async Task<DownloadResult> DownloadAsync(string jobId, string partPath, string expectedSha256,
            Action<long, long> progress, CancellationToken ct)
        {
            string dir = Path.GetDirectoryName(Path.GetFullPath(partPath));
            if (!string.IsNullOrEmpty(dir)) Directory.CreateDirectory(dir);
            var result = new DownloadResult();
            int failures = 0;
            bool restarted = false;
            while (true)
            {
                ct.ThrowIfCancellationRequested();
                long have = File.Exists(partPath) ? new FileInfo(partPath).Length : 0;
                Exception lastError = null;
                try
                {
                    result.Requests++;
                    result.ResumedFrom = have;
                    long total = await DownloadOnce(jobId, partPath, have, expectedSha256, progress, result, ct).ConfigureAwait(false);
                    if (total < 0)
                    {   // the server refused the range (416): start again from zero once
                        if (restarted) throw new PropForgeException(ErrorKind.Server, "the server refused to resume the download of job " + jobId);
                        restarted = true;
                        File.Delete(partPath);
                        continue;
                    }
                    Verify(partPath, total, expectedSha256, result);
                    return result;
                }
                catch (PropForgeException pe)
                {
                    if (pe.Kind != ErrorKind.Network) throw;
                    lastError = pe;
                }
                catch (OperationCanceledException)
                {
                    if (ct.IsCancellationRequested) throw;
                    lastError = new PropForgeException(ErrorKind.Network, "the download timed out");
                }
                catch (Exception ex) when (ex is HttpRequestException || ex is WebException)
                {
                    lastError = ex;
                }
                failures++;
                if (failures > MaxRetries)
                    throw new PropForgeException(ErrorKind.Network, "download of job " + jobId + " kept failing: "
                        + (lastError != null ? lastError.Message : "?"), 0, "", lastError);
                await Task.Delay(Backoff(failures), ct).ConfigureAwait(false);
            }
        }

        /// <summary>One GET of the result; appends to partPath. Returns the total size, or -1 on 416.</summary>
        async Task<long> DownloadOnce(string jobId, string partPath, long have, string expectedSha256,
            Action<long, long> progress, DownloadResult result, CancellationToken ct)
        {
            var headers = new Dictionary<string, string>();
            if (have > 0)
            {
                headers["Range"] = "bytes=" + have.ToString(CultureInfo.InvariantCulture) + "-";
                if (!string.IsNullOrEmpty(expectedSha256)) headers["If-Range"] = "\"" + expectedSha256 + "\"";
            }
            using (var resp = await SendAsync(HttpMethod.Get, "v1/jobs/" + Esc(jobId) + "/result", null, headers, ct, streaming: true).ConfigureAwait(false))
            {
                if ((int)resp.StatusCode == 416) return -1;
                await EnsureOk(resp).ConfigureAwait(false);
                long total;
                bool append = resp.StatusCode == HttpStatusCode.PartialContent;
                if (append)
                {
                    var cr = resp.Content.Headers.ContentRange;
                    if (cr == null || !cr.HasLength || !cr.From.HasValue)
                        throw new PropForgeException(ErrorKind.Server, "206 response without a usable Content-Range");
                    if (cr.From.Value != have) return -1;  // not where we asked: start over
                    total = cr.Length.Value;
                }
                else
                {
                    long? len = resp.Content.Headers.ContentLength;
                    total = len.HasValue ? len.Value : -2;
                }
                result.ServerSha256 = HeaderSha(resp);
                long done = append ? have : 0;
                var stream = await resp.Content.ReadAsStreamAsync().ConfigureAwait(false);
                using (var fs = new FileStream(partPath, append ? FileMode.Append : FileMode.Create, FileAccess.Write, FileShare.None))
                {
                    var buf = new byte[1 << 16];
                    while (true)
                    {
                        int n = await ReadWithIdleTimeout(stream, buf, resp, ct).ConfigureAwait(false);
                        if (n < 0) throw new PropForgeException(ErrorKind.Network, "the download stalled");
                        if (n == 0) break;
                        await fs.WriteAsync(buf, 0, n, ct).ConfigureAwait(false);
                        done += n;
                        if (progress != null) progress(done, total);
                    }
                }
                if (total == -2) total = done;  // no Content-Length (chunked): trust the hash check
                if (done != total)
                    throw new PropForgeException(ErrorKind.Network, "the download ended early (" + done + " of " + total + " bytes)");
                return total;
            }
        }

        static string HeaderSha(HttpResponseMessage resp)
        {
            IEnumerable<string> values;
            if (resp.Headers.TryGetValues("X-Content-SHA256", out values))
                foreach (string v in values) return v.Trim().ToLowerInvariant();
            if (resp.Headers.ETag != null) return resp.Headers.ETag.Tag.Trim('"').ToLowerInvariant();
            return "";
        }

        static void Verify(string partPath, long total, string expectedSha256, DownloadResult result)
        {
            long size = new FileInfo(partPath).Length;
            string sha = Sha256File(partPath);
            string want = result.ServerSha256;
            if (want.Length == 0) want = (expectedSha256 ?? "").ToLowerInvariant();
            bool bad = size != total || (want.Length > 0 && sha != want)
                || (!string.IsNullOrEmpty(expectedSha256) && sha != expectedSha256.ToLowerInvariant());
            if (bad)
            {
                File.Delete(partPath);
                throw new PropForgeException(ErrorKind.Integrity, "downloaded result is corrupt (size " + size + "/" + total
                    + ", sha256 " + sha + " != " + want + "); deleted it, try again");
            }
            result.Size = size;
            result.Sha256 = sha;
        }

        public static string Sha256File(string path)
        {
            using (var sha = SHA256.Create())
            using (var fs = File.OpenRead(path))
                return Hex(sha.ComputeHash(fs));
        }

        static string Hex(byte[] h)
        {
            var sb = new StringBuilder(h.Length * 2);
            foreach (byte b in h) sb.Append(b.ToString("x2", CultureInfo.InvariantCulture));
            return sb.ToString();
        }

        // ------------------------------------------------------------------ plumbing

        async Task<Dictionary<string, object>> GetJsonAsync(string path, CancellationToken ct)
        {
            using (var resp = await SendAsync(HttpMethod.Get, path, null, null, ct).ConfigureAwait(false))
            {
                await EnsureOk(resp).ConfigureAwait(false);
                string body = await resp.Content.ReadAsStringAsync().ConfigureAwait(false);
                try { return Json.ParseObject(body); }
                catch (FormatException fe) { throw new PropForgeException(ErrorKind.Server, "the server sent invalid JSON for " + path + ": " + fe.Message); }
            }
        }

        async Task<HttpResponseMessage> SendAsync(HttpMethod method, string path, HttpContent content,
            Dictionary<string, string> headers, CancellationToken ct, bool streaming = false)
        {
            var req = new HttpRequestMessage(method, new Uri(baseUri, path));
            req.Content = content;
            if (token != null) req.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token);
            if (headers != null)
                foreach (var kv in headers) req.Headers.TryAddWithoutValidation(kv.Key, kv.Value);
            using (var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct))
            {
                // Streams only time out while waiting for headers; reads have their own idle timeout.
                timeout.CancelAfter(RequestTimeout);
                try
                {
                    var option = streaming ? HttpCompletionOption.ResponseHeadersRead : HttpCompletionOption.ResponseContentRead;
                    return await http.SendAsync(req, option, timeout.Token).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                    if (ct.IsCancellationRequested) throw;
                    throw new PropForgeException(ErrorKind.Network, "PropForge server at " + baseUri + " did not answer within "
                        + RequestTimeout.TotalSeconds + " s");
                }
                catch (HttpRequestException e)
                {
                    throw new PropForgeException(ErrorKind.Network, "cannot reach the PropForge server at " + baseUri
                        + " (is `propforge serve` running?): " + Innermost(e).Message, 0, "", e);
                }
                catch (WebException e)
                {
                    throw new PropForgeException(ErrorKind.Network, "cannot reach the PropForge server at " + baseUri + ": " + e.Message, 0, "", e);
                }
            }
        }

        static Exception Innermost(Exception e)
        {
            while (e.InnerException != null) e = e.InnerException;
            return e;
        }

        /// <summary>Turns a non-2xx response (problem+json when the server sends one) into a clear exception.</summary>
        static async Task EnsureOk(HttpResponseMessage resp)
        {
            int status = (int)resp.StatusCode;
            if (status >= 200 && status < 300) return;
            string body = "";
            try { body = await resp.Content.ReadAsStringAsync().ConfigureAwait(false); }
            catch (Exception) { }
            throw ProblemToException(status, body);
        }

        public static PropForgeException ProblemToException(int status, string body)
        {
            string detail = "", code = "", title = "";
            try
            {
                var d = Json.ParseObject(body);
                detail = Json.GetString(d, "detail");
                code = Json.GetString(d, "code");
                title = Json.GetString(d, "title");
            }
            catch (FormatException) { detail = body.Length > 200 ? body.Substring(0, 200) : body; }
            string what = detail.Length > 0 ? detail : title.Length > 0 ? title : "HTTP " + status;
            ErrorKind kind;
            string msg;
            if (status == 401 || status == 403)
            {
                kind = ErrorKind.Unauthorized;
                msg = "the server rejected the token (HTTP " + status + "): set the right token in Window > PropForge (" + what + ")";
            }
            else if (status == 404) { kind = ErrorKind.NotFound; msg = "not found on the server: " + what; }
            else if (status == 429) { kind = ErrorKind.Busy; msg = "the server queue is full, try again later: " + what; }
            else if (status == 409) { kind = ErrorKind.BadRequest; msg = "the job has no result yet: " + what; }
            else if (status >= 400 && status < 500) { kind = ErrorKind.BadRequest; msg = "the server refused the request (HTTP " + status + "): " + what; }
            else if (status == 502 || status == 503 || status == 504) { kind = ErrorKind.Network; msg = "the server is unavailable (HTTP " + status + "): " + what; }
            else { kind = ErrorKind.Server; msg = "server error (HTTP " + status + "): " + what; }
            return new PropForgeException(kind, msg, status, code);
        }

        static TimeSpan Backoff(int failures)
        {
            double s = Math.Min(8.0, 0.25 * Math.Pow(2, failures - 1));
            return TimeSpan.FromSeconds(s);
        }

        static string Esc(string id)
        {
            if (string.IsNullOrEmpty(id)) throw new PropForgeException(ErrorKind.BadRequest, "job id is empty");
            return Uri.EscapeDataString(id);
        }

        public static string MimeFor(string name)
        {
            string ext = (Path.GetExtension(name ?? "") ?? "").ToLowerInvariant();
            if (ext == ".jpg" || ext == ".jpeg") return "image/jpeg";
            if (ext == ".webp") return "image/webp";
            return "image/png";
        }

        /// <summary>ASCII-only, quote-free file name for the multipart header (the name is informational).</summary>
        public static string SafeFileName(string name)
        {
            string n = Path.GetFileName(name ?? "");
            var sb = new StringBuilder();
            foreach (char c in n) sb.Append(c >= 0x20 && c < 0x7f && c != '"' && c != '\\' ? c : '_');
            return sb.Length > 0 ? sb.ToString() : "image.png";
        }
    }
}
