// Records of the HTTP bridge (docs/http-api.md), read tolerantly from the proto3 JSON mapping:
// unknown fields are ignored and missing fields take their proto default, so a newer server
// never breaks an older plugin.
using System;
using System.Collections.Generic;
using System.Globalization;

namespace PropForge.Client
{
    /// <summary>Options of one job (proto JobOptions). Zero values mean "server default".</summary>
    public sealed class JobOptions
    {
        public string Backend = "";
        public string PipelineType = "";
        public string Quality = "";          // draft | standard | high
        public int Faces;                    // face budget
        public int TextureSize;              // 128..4096, power of two
        public string TextureFormat = "";    // TEXTURE_FORMAT_PNG | _JPEG | _WEBP
        public float Height;                 // metres
        public ulong Seed;
        public bool HasSeed;                 // seed 0 is a valid seed
        public string AlphaMode = "";        // "" / auto | OPAQUE | MASK | BLEND
        public int Lods;                     // extra levels of detail 0..4 (nodes name_LOD1..): a LODGroup
        public string Collision = "";        // "" / none | convex | mesh: a MeshCollider (convex or not)

        public JobOptions Clone() { return (JobOptions)MemberwiseClone(); }

        /// <summary>JSON object in the proto3 mapping; zero values are left out.</summary>
        public Dictionary<string, object> ToJson()
        {
            var d = new Dictionary<string, object>();
            if (!string.IsNullOrEmpty(Backend)) d["backend"] = Backend;
            if (!string.IsNullOrEmpty(PipelineType)) d["pipelineType"] = PipelineType;
            if (!string.IsNullOrEmpty(Quality)) d["quality"] = Quality;
            if (Faces > 0) d["faces"] = Faces;
            if (TextureSize > 0) d["textureSize"] = TextureSize;
            if (!string.IsNullOrEmpty(TextureFormat)) d["textureFormat"] = TextureFormat;
            if (Height > 0) d["height"] = (double)Height;
            if (!string.IsNullOrEmpty(AlphaMode)) d["alphaMode"] = AlphaMode;
            if (Lods > 0) d["lods"] = Lods;
            if (!string.IsNullOrEmpty(Collision) && Collision != "none") d["collision"] = Collision;
            if (HasSeed)
            {
                d["seed"] = Seed.ToString(CultureInfo.InvariantCulture);  // uint64 -> JSON string
                d["hasSeed"] = true;
            }
            return d;
        }

        public static JobOptions FromJson(IDictionary<string, object> d)
        {
            var o = new JobOptions();
            if (d == null) return o;
            o.Backend = Json.GetString(d, "backend");
            o.PipelineType = Json.GetString(d, "pipelineType");
            o.Quality = Json.GetString(d, "quality");
            o.Faces = (int)Json.GetLong(d, "faces");
            o.TextureSize = (int)Json.GetLong(d, "textureSize");
            o.TextureFormat = Json.GetString(d, "textureFormat");
            o.Height = (float)Json.GetDouble(d, "height");
            ulong seed;
            ulong.TryParse(Json.GetString(d, "seed", "0"), NumberStyles.Integer, CultureInfo.InvariantCulture, out seed);
            o.Seed = seed;
            o.HasSeed = Json.GetBool(d, "hasSeed");
            o.AlphaMode = Json.GetString(d, "alphaMode");
            o.Lods = (int)Json.GetLong(d, "lods");
            o.Collision = Json.GetString(d, "collision");
            return o;
        }

        public override string ToString()
        {
            return Json.Serialize(ToJson());
        }
    }

    /// <summary>Job states of the proto, as the JSON mapping spells them.</summary>
    public static class JobStates
    {
        public const string Queued = "JOB_STATE_QUEUED";
        public const string Running = "JOB_STATE_RUNNING";
        public const string Succeeded = "JOB_STATE_SUCCEEDED";
        public const string Failed = "JOB_STATE_FAILED";
        public const string Cancelled = "JOB_STATE_CANCELLED";

        public static bool IsTerminal(string state)
        {
            return state == Succeeded || state == Failed || state == Cancelled;
        }
    }

    /// <summary>A job as the server reports it (proto Job).</summary>
    public sealed class JobInfo
    {
        public string Id = "";
        public string State = "";
        public JobOptions Options = new JobOptions();
        public string Backend = "";
        public int QueuePosition;
        public string Stage = "";
        public double Fraction;
        public string Error = "";
        public double CreatedAt;
        public double StartedAt;
        public double FinishedAt;
        public long ResultSize;
        public string ResultSha256 = "";
        public string ImageSha256 = "";
        public bool Cached;
        public string ImageName = "";
        public string ErrorCode = "";  // gRPC status name when FAILED

        public bool IsTerminal { get { return JobStates.IsTerminal(State); } }

        public static JobInfo FromJson(IDictionary<string, object> d)
        {
            var j = new JobInfo();
            j.Id = Json.GetString(d, "id");
            j.State = Json.GetString(d, "state", "JOB_STATE_UNSPECIFIED");
            j.Options = JobOptions.FromJson(Json.GetObject(d, "options"));
            j.Backend = Json.GetString(d, "backend");
            j.QueuePosition = (int)Json.GetLong(d, "queuePosition");
            j.Stage = Json.GetString(d, "stage");
            j.Fraction = Json.GetDouble(d, "fraction");
            j.Error = Json.GetString(d, "error");
            j.CreatedAt = Json.GetDouble(d, "createdAt");
            j.StartedAt = Json.GetDouble(d, "startedAt");
            j.FinishedAt = Json.GetDouble(d, "finishedAt");
            j.ResultSize = Json.GetLong(d, "resultSize");
            j.ResultSha256 = Json.GetString(d, "resultSha256");
            j.ImageSha256 = Json.GetString(d, "imageSha256");
            j.Cached = Json.GetBool(d, "cached");
            j.ImageName = Json.GetString(d, "imageName");
            j.ErrorCode = Json.GetString(d, "errorCode");
            return j;
        }
    }

    /// <summary>One event of a job's feed (proto JobEvent, flattened: fields of the other kinds stay default).</summary>
    public sealed class JobEvent
    {
        public const string KindQueued = "queued";
        public const string KindStageStarted = "stage_started";
        public const string KindProgress = "progress";
        public const string KindFinished = "finished";
        public const string KindFailed = "failed";
        public const string KindCancelled = "cancelled";

        public long Sequence;
        public string JobId = "";
        public double Time;
        public string Kind = "";
        public int Position;          // queued
        public string Stage = "";     // stage_started, progress
        public int Step;              // progress: sampler step i (1-based), 0 if not a sampler stage
        public int Total;             // progress: n
        public double Fraction = -1;  // progress: of the whole job; -1 when the event has none
        public double EtaSeconds = -1;
        public string Message = "";
        public long ResultSize;       // finished
        public string ResultSha256 = "";
        public bool Cached;
        public string Reason = "";    // failed, cancelled
        public string Code = "";      // failed

        public bool IsTerminal
        {
            get { return Kind == KindFinished || Kind == KindFailed || Kind == KindCancelled; }
        }

        /// <summary>Builds an event from an SSE frame; the SSE `event:` name wins, the JSON oneof is the fallback.</summary>
        public static JobEvent FromSse(SseEvent frame)
        {
            var d = Json.ParseObject(frame.Data);
            var e = new JobEvent();
            e.Sequence = Json.GetLong(d, "sequence");
            if (e.Sequence == 0) long.TryParse(frame.Id, NumberStyles.Integer, CultureInfo.InvariantCulture, out e.Sequence);
            e.JobId = Json.GetString(d, "jobId");
            e.Time = Json.GetDouble(d, "time");
            e.Kind = frame.Event;
            var q = Json.GetObject(d, "queued");
            var st = Json.GetObject(d, "stageStarted");
            var p = Json.GetObject(d, "progress");
            var fi = Json.GetObject(d, "finished");
            var fa = Json.GetObject(d, "failed");
            var ca = Json.GetObject(d, "cancelled");
            if (string.IsNullOrEmpty(e.Kind) || e.Kind == "message")
            {
                e.Kind = q != null ? KindQueued : st != null ? KindStageStarted : p != null ? KindProgress
                    : fi != null ? KindFinished : fa != null ? KindFailed : ca != null ? KindCancelled : "";
            }
            if (q != null) e.Position = (int)Json.GetLong(q, "position");
            if (st != null) e.Stage = Json.GetString(st, "stage");
            if (p != null)
            {
                e.Stage = Json.GetString(p, "stage");
                e.Step = (int)Json.GetLong(p, "step");
                e.Total = (int)Json.GetLong(p, "total");
                e.Fraction = Json.GetDouble(p, "fraction");
                e.EtaSeconds = Json.GetDouble(p, "etaSeconds", -1);
                e.Message = Json.GetString(p, "message");
            }
            if (fi != null)
            {
                e.ResultSize = Json.GetLong(fi, "resultSize");
                e.ResultSha256 = Json.GetString(fi, "resultSha256");
                e.Cached = Json.GetBool(fi, "cached");
                e.Fraction = 1.0;
            }
            if (fa != null)
            {
                e.Reason = Json.GetString(fa, "reason");
                e.Code = Json.GetString(fa, "code");
            }
            if (ca != null) e.Reason = Json.GetString(ca, "reason");
            return e;
        }

        /// <summary>One line for a progress bar: "sample 12/25, ETA 8 s".</summary>
        public string Describe()
        {
            switch (Kind)
            {
                case KindQueued: return "queued (position " + Position + ")";
                case KindStageStarted: return Stage;
                case KindFinished: return Cached ? "finished (cached)" : "finished";
                case KindFailed: return "failed: " + Reason;
                case KindCancelled: return "cancelled" + (string.IsNullOrEmpty(Reason) ? "" : ": " + Reason);
            }
            string s = Stage;
            if (Total > 0) s += " " + Step + "/" + Total;
            if (EtaSeconds >= 0) s += ", ETA " + Math.Ceiling(EtaSeconds).ToString(CultureInfo.InvariantCulture) + " s";
            if (!string.IsNullOrEmpty(Message)) s += " - " + Message;
            return s;
        }
    }

    /// <summary>A generator backend the server offers (proto Backend).</summary>
    public sealed class BackendInfo
    {
        public string Name = "";
        public bool Available;
        public string Reason = "";
        public string Description = "";
        public List<string> PipelineTypes = new List<string>();
        public bool Gpu;
        public string ModelVersion = "";

        public static BackendInfo FromJson(IDictionary<string, object> d)
        {
            var b = new BackendInfo();
            b.Name = Json.GetString(d, "name");
            b.Available = Json.GetBool(d, "available");
            b.Reason = Json.GetString(d, "reason");
            b.Description = Json.GetString(d, "description");
            foreach (object o in Json.GetList(d, "pipelineTypes"))
            {
                var s = o as string;
                if (s != null) b.PipelineTypes.Add(s);
            }
            b.Gpu = Json.GetBool(d, "gpu");
            b.ModelVersion = Json.GetString(d, "modelVersion");
            return b;
        }
    }

    /// <summary>What went wrong, in words a level designer can act on.</summary>
    public enum ErrorKind { Network, Unauthorized, NotFound, BadRequest, Busy, Server, Integrity, JobFailed, Cancelled }

    public sealed class PropForgeException : Exception
    {
        public readonly ErrorKind Kind;
        public readonly int HttpStatus;   // 0 when no HTTP response
        public readonly string Code;      // problem JSON "code" or failed event code

        public PropForgeException(ErrorKind kind, string message, int httpStatus = 0, string code = "", Exception inner = null)
            : base(message, inner)
        {
            Kind = kind;
            HttpStatus = httpStatus;
            Code = code ?? "";
        }
    }
}
