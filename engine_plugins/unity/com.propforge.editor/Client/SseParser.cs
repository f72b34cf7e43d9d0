// Incremental Server-Sent Events parser (WHATWG event-stream rules) fed with raw network chunks.
// Chunks may split lines, CRLF pairs and UTF-8 sequences anywhere; the parser keeps the tail.
using System;
using System.Collections.Generic;
using System.Text;

namespace PropForge.Client
{
    public sealed class SseEvent
    {
        public string Id = "";
        public string Event = "message";
        public string Data = "";
        public int Retry = -1;
    }

    public sealed class SseParser
    {
        readonly Decoder decoder = new UTF8Encoding(false, false).GetDecoder();
        readonly StringBuilder line = new StringBuilder();
        readonly StringBuilder data = new StringBuilder();
        string eventName = "";
        string lastEventId = "";
        bool hasData;
        bool lastWasCr;
        bool atStart = true;
        int retry = -1;

        /// <summary>The last `id:` seen (what to send as Last-Event-ID when reconnecting).</summary>
        public string LastEventId { get { return lastEventId; } }

        /// <summary>Number of comment lines seen (": keepalive").</summary>
        public int Comments { get; private set; }

        public List<SseEvent> Feed(byte[] buffer, int offset, int count)
        {
            var chars = new char[decoder.GetCharCount(buffer, offset, count)];
            int n = decoder.GetChars(buffer, offset, count, chars, 0);
            return Feed(new string(chars, 0, n));
        }

        public List<SseEvent> Feed(string text)
        {
            var output = new List<SseEvent>();
            foreach (char c in text)
            {
                if (atStart)
                {
                    atStart = false;
                    if (c == '\uFEFF') continue;  // a BOM at the start of the stream is ignored
                }
                if (c == '\n' && lastWasCr) { lastWasCr = false; continue; }  // second half of CRLF
                lastWasCr = c == '\r';
                if (c == '\r' || c == '\n')
                {
                    ProcessLine(line.ToString(), output);
                    line.Length = 0;
                }
                else
                {
                    line.Append(c);
                }
            }
            return output;
        }

        void ProcessLine(string l, List<SseEvent> output)
        {
            if (l.Length == 0) { Dispatch(output); return; }
            if (l[0] == ':') { Comments++; return; }
            string field = l, value = "";
            int colon = l.IndexOf(':');
            if (colon >= 0)
            {
                field = l.Substring(0, colon);
                value = l.Substring(colon + 1);
                if (value.Length > 0 && value[0] == ' ') value = value.Substring(1);
            }
            switch (field)
            {
                case "event": eventName = value; break;
                case "data":
                    if (hasData) data.Append('\n');
                    data.Append(value);
                    hasData = true;
                    break;
                case "id":
                    if (value.IndexOf('\0') < 0) lastEventId = value;
                    break;
                case "retry":
                    int r;
                    if (int.TryParse(value, out r) && r >= 0) retry = r;
                    break;
            }
        }

        void Dispatch(List<SseEvent> output)
        {
            if (!hasData) { eventName = ""; return; }
            var e = new SseEvent();
            e.Id = lastEventId;
            e.Event = eventName.Length > 0 ? eventName : "message";
            e.Data = data.ToString();
            e.Retry = retry;
            output.Add(e);
            data.Length = 0;
            hasData = false;
            eventName = "";
        }
    }
}
