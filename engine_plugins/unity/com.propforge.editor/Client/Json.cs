// Minimal JSON reader/writer for the PropForge HTTP bridge (proto3 JSON mapping).
// Why our own: the client assembly must not reference UnityEngine (no JsonUtility) and must build
// with Debian's Mono `mcs` using only mscorlib/System/System.Core/System.Net.Http.
using System;
using System.Collections;
using System.Collections.Generic;
using System.Globalization;
using System.Text;

namespace PropForge.Client
{
    /// <summary>Parses JSON into Dictionary&lt;string, object&gt;, List&lt;object&gt;, string, double, bool or null.</summary>
    public static class Json
    {
        public static object Parse(string text)
        {
            if (text == null) throw new FormatException("JSON text is null");
            var p = new Reader(text);
            p.SkipWs();
            object v = p.ReadValue();
            p.SkipWs();
            if (!p.AtEnd) throw p.Error("unexpected trailing characters");
            return v;
        }

        public static Dictionary<string, object> ParseObject(string text)
        {
            var d = Parse(text) as Dictionary<string, object>;
            if (d == null) throw new FormatException("expected a JSON object");
            return d;
        }

        public static string Serialize(object value)
        {
            var sb = new StringBuilder();
            Write(sb, value);
            return sb.ToString();
        }

        // ---- typed getters: tolerant of proto3 JSON (int64 as strings, missing = default) ----

        public static string GetString(IDictionary<string, object> d, string key, string fallback = "")
        {
            object v;
            if (d == null || !d.TryGetValue(key, out v) || v == null) return fallback;
            if (v is string) return (string)v;
            if (v is double) return ((double)v).ToString("R", CultureInfo.InvariantCulture);
            if (v is bool) return (bool)v ? "true" : "false";
            return fallback;
        }

        public static double GetDouble(IDictionary<string, object> d, string key, double fallback = 0)
        {
            object v;
            if (d == null || !d.TryGetValue(key, out v) || v == null) return fallback;
            if (v is double) return (double)v;
            double r;
            var s = v as string;
            if (s != null && double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out r)) return r;
            return fallback;
        }

        public static long GetLong(IDictionary<string, object> d, string key, long fallback = 0)
        {
            object v;
            if (d == null || !d.TryGetValue(key, out v) || v == null) return fallback;
            if (v is double) return (long)(double)v;
            long r;
            var s = v as string;
            if (s != null && long.TryParse(s, NumberStyles.Integer, CultureInfo.InvariantCulture, out r)) return r;
            return fallback;
        }

        public static bool GetBool(IDictionary<string, object> d, string key, bool fallback = false)
        {
            object v;
            if (d == null || !d.TryGetValue(key, out v) || v == null) return fallback;
            if (v is bool) return (bool)v;
            var s = v as string;
            if (s != null) return s == "true";
            return fallback;
        }

        public static Dictionary<string, object> GetObject(IDictionary<string, object> d, string key)
        {
            object v;
            if (d == null || !d.TryGetValue(key, out v)) return null;
            return v as Dictionary<string, object>;
        }

        public static List<object> GetList(IDictionary<string, object> d, string key)
        {
            object v;
            if (d == null || !d.TryGetValue(key, out v)) return new List<object>();
            return (v as List<object>) ?? new List<object>();
        }

        // ---- writer ----

        static void Write(StringBuilder sb, object v)
        {
            if (v == null) { sb.Append("null"); return; }
            var s = v as string;
            if (s != null) { WriteString(sb, s); return; }
            if (v is bool) { sb.Append((bool)v ? "true" : "false"); return; }
            if (v is double || v is float || v is decimal)
            {
                double x = Convert.ToDouble(v, CultureInfo.InvariantCulture);
                if (double.IsNaN(x) || double.IsInfinity(x)) throw new ArgumentException("JSON cannot hold NaN or infinity");
                sb.Append(x.ToString("R", CultureInfo.InvariantCulture));
                return;
            }
            if (v is int || v is long || v is uint || v is ulong || v is short || v is ushort || v is byte)
            {
                sb.Append(Convert.ToString(v, CultureInfo.InvariantCulture));
                return;
            }
            var dict = v as IDictionary;
            if (dict != null)
            {
                sb.Append('{');
                bool first = true;
                foreach (DictionaryEntry e in dict)
                {
                    if (!first) sb.Append(',');
                    first = false;
                    WriteString(sb, Convert.ToString(e.Key, CultureInfo.InvariantCulture));
                    sb.Append(':');
                    Write(sb, e.Value);
                }
                sb.Append('}');
                return;
            }
            var list = v as IEnumerable;
            if (list != null)
            {
                sb.Append('[');
                bool first = true;
                foreach (object item in list)
                {
                    if (!first) sb.Append(',');
                    first = false;
                    Write(sb, item);
                }
                sb.Append(']');
                return;
            }
            throw new ArgumentException("cannot serialize " + v.GetType().Name + " to JSON");
        }

        static void WriteString(StringBuilder sb, string s)
        {
            sb.Append('"');
            foreach (char c in s)
            {
                switch (c)
                {
                    case '"': sb.Append("\\\""); break;
                    case '\\': sb.Append("\\\\"); break;
                    case '\n': sb.Append("\\n"); break;
                    case '\r': sb.Append("\\r"); break;
                    case '\t': sb.Append("\\t"); break;
                    case '\b': sb.Append("\\b"); break;
                    case '\f': sb.Append("\\f"); break;
                    default:
                        if (c < 0x20) sb.Append("\\u").Append(((int)c).ToString("x4"));
                        else sb.Append(c);
                        break;
                }
            }
            sb.Append('"');
        }

        // ---- reader ----

        sealed class Reader
        {
            readonly string s;
            int i;
            int depth;

            public Reader(string text) { s = text; }

            public bool AtEnd { get { return i >= s.Length; } }

            public FormatException Error(string what)
            {
                return new FormatException("invalid JSON at offset " + i + ": " + what);
            }

            public void SkipWs()
            {
                while (i < s.Length && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r')) i++;
            }

            public object ReadValue()
            {
                if (AtEnd) throw Error("unexpected end");
                char c = s[i];
                if (c == '{') return ReadObject();
                if (c == '[') return ReadArray();
                if (c == '"') return ReadString();
                if (c == 't') { Expect("true"); return true; }
                if (c == 'f') { Expect("false"); return false; }
                if (c == 'n') { Expect("null"); return null; }
                if (c == '-' || (c >= '0' && c <= '9')) return ReadNumber();
                throw Error("unexpected character '" + c + "'");
            }

            void Expect(string word)
            {
                if (string.CompareOrdinal(s, i, word, 0, word.Length) != 0) throw Error("expected " + word);
                i += word.Length;
            }

            Dictionary<string, object> ReadObject()
            {
                if (++depth > 256) throw Error("nesting too deep");
                var d = new Dictionary<string, object>();
                i++;
                SkipWs();
                if (!AtEnd && s[i] == '}') { i++; depth--; return d; }
                while (true)
                {
                    SkipWs();
                    if (AtEnd || s[i] != '"') throw Error("expected a string key");
                    string key = ReadString();
                    SkipWs();
                    if (AtEnd || s[i] != ':') throw Error("expected ':'");
                    i++;
                    SkipWs();
                    d[key] = ReadValue();
                    SkipWs();
                    if (AtEnd) throw Error("unterminated object");
                    if (s[i] == ',') { i++; continue; }
                    if (s[i] == '}') { i++; depth--; return d; }
                    throw Error("expected ',' or '}'");
                }
            }

            List<object> ReadArray()
            {
                if (++depth > 256) throw Error("nesting too deep");
                var l = new List<object>();
                i++;
                SkipWs();
                if (!AtEnd && s[i] == ']') { i++; depth--; return l; }
                while (true)
                {
                    SkipWs();
                    l.Add(ReadValue());
                    SkipWs();
                    if (AtEnd) throw Error("unterminated array");
                    if (s[i] == ',') { i++; continue; }
                    if (s[i] == ']') { i++; depth--; return l; }
                    throw Error("expected ',' or ']'");
                }
            }

            string ReadString()
            {
                i++; // opening quote
                var sb = new StringBuilder();
                while (true)
                {
                    if (AtEnd) throw Error("unterminated string");
                    char c = s[i++];
                    if (c == '"') return sb.ToString();
                    if (c != '\\') { sb.Append(c); continue; }
                    if (AtEnd) throw Error("unterminated escape");
                    char e = s[i++];
                    switch (e)
                    {
                        case '"': sb.Append('"'); break;
                        case '\\': sb.Append('\\'); break;
                        case '/': sb.Append('/'); break;
                        case 'b': sb.Append('\b'); break;
                        case 'f': sb.Append('\f'); break;
                        case 'n': sb.Append('\n'); break;
                        case 'r': sb.Append('\r'); break;
                        case 't': sb.Append('\t'); break;
                        case 'u':
                            if (i + 4 > s.Length) throw Error("short \\u escape");
                            int code;
                            if (!int.TryParse(s.Substring(i, 4), NumberStyles.HexNumber, CultureInfo.InvariantCulture, out code))
                                throw Error("bad \\u escape");
                            sb.Append((char)code);
                            i += 4;
                            break;
                        default: throw Error("bad escape \\" + e);
                    }
                }
            }

            double ReadNumber()
            {
                int start = i;
                if (s[i] == '-') i++;
                while (i < s.Length && "0123456789+-.eE".IndexOf(s[i]) >= 0) i++;
                double v;
                if (!double.TryParse(s.Substring(start, i - start), NumberStyles.Float, CultureInfo.InvariantCulture, out v))
                    throw Error("bad number");
                return v;
            }
        }
    }
}
