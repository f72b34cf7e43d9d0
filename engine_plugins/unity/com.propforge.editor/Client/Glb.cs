// Reads what the editor needs from a PropForge GLB without an engine: materials and their texture
// images (for render-pipeline remapping), node names (LOD levels, collision mesh) and asset.extras.
using System;
using System.Collections.Generic;
using System.Text;
using System.Text.RegularExpressions;

namespace PropForge.Client
{
    public sealed class GlbMaterial
    {
        public string Name = "";
        public int BaseColorImage = -1;          // image index, -1 = none
        public int MetallicRoughnessImage = -1;  // glTF: G = roughness, B = metallic
        public int NormalImage = -1;
        public int OcclusionImage = -1;
        public int EmissiveImage = -1;
        public double[] BaseColorFactor = { 1, 1, 1, 1 };
        public double MetallicFactor = 1;
        public double RoughnessFactor = 1;
        public string AlphaMode = "OPAQUE";      // OPAQUE | MASK | BLEND
        public double AlphaCutoff = 0.5;
        public bool DoubleSided;
    }

    public sealed class GlbDocument
    {
        const uint Magic = 0x46546C67;      // "glTF"
        const uint ChunkJson = 0x4E4F534A;  // "JSON"
        const uint ChunkBin = 0x004E4942;   // "BIN\0"

        public Dictionary<string, object> Gltf;
        public byte[] Bin = new byte[0];

        public static GlbDocument Read(byte[] glb)
        {
            if (glb == null || glb.Length < 20) throw new FormatException("not a GLB: too short");
            if (U32(glb, 0) != Magic) throw new FormatException("not a GLB: bad magic");
            if (U32(glb, 4) != 2) throw new FormatException("unsupported GLB version " + U32(glb, 4));
            long length = U32(glb, 8);
            if (length > glb.Length) throw new FormatException("GLB is truncated (" + glb.Length + " of " + length + " bytes)");
            var doc = new GlbDocument();
            long off = 12;
            while (off + 8 <= length)
            {
                long clen = U32(glb, (int)off);
                uint ctype = U32(glb, (int)off + 4);
                if (off + 8 + clen > length) throw new FormatException("GLB chunk runs past the end");
                if (ctype == ChunkJson && doc.Gltf == null)
                    doc.Gltf = Json.ParseObject(Encoding.UTF8.GetString(glb, (int)off + 8, (int)clen));
                else if (ctype == ChunkBin && doc.Bin.Length == 0)
                {
                    doc.Bin = new byte[clen];
                    Buffer.BlockCopy(glb, (int)off + 8, doc.Bin, 0, (int)clen);
                }
                off += 8 + clen;
            }
            if (doc.Gltf == null) throw new FormatException("GLB has no JSON chunk");
            return doc;
        }

        public static GlbDocument ReadFile(string path)
        {
            return Read(System.IO.File.ReadAllBytes(path));
        }

        static uint U32(byte[] b, int o)
        {
            return (uint)(b[o] | (b[o + 1] << 8) | (b[o + 2] << 16) | (b[o + 3] << 24));
        }

        List<object> Array(string key) { return Json.GetList(Gltf, key); }

        Dictionary<string, object> Item(string key, int index)
        {
            var list = Array(key);
            if (index < 0 || index >= list.Count) return null;
            return list[index] as Dictionary<string, object>;
        }

        /// <summary>Image of a texture an engine can decode: the PNG/JPEG `source` (a WebP texture keeps one as fallback).</summary>
        public int TextureImage(int textureIndex)
        {
            var t = Item("textures", textureIndex);
            if (t == null || !t.ContainsKey("source")) return -1;
            return (int)Json.GetLong(t, "source", -1);
        }

        /// <summary>Encoded bytes (PNG/JPEG) of an image stored in a bufferView of the GLB.</summary>
        public byte[] ImageBytes(int imageIndex, out string mimeType)
        {
            mimeType = "";
            var img = Item("images", imageIndex);
            if (img == null) return null;
            mimeType = Json.GetString(img, "mimeType");
            if (!img.ContainsKey("bufferView")) return null;  // external URIs are not produced by PropForge
            var bv = Item("bufferViews", (int)Json.GetLong(img, "bufferView"));
            if (bv == null) return null;
            long offset = Json.GetLong(bv, "byteOffset");
            long length = Json.GetLong(bv, "byteLength");
            if (offset < 0 || length < 0 || offset + length > Bin.Length) throw new FormatException("image bufferView outside the BIN chunk");
            var bytes = new byte[length];
            Buffer.BlockCopy(Bin, (int)offset, bytes, 0, (int)length);
            return bytes;
        }

        public List<GlbMaterial> Materials()
        {
            var result = new List<GlbMaterial>();
            foreach (object o in Array("materials"))
            {
                var m = o as Dictionary<string, object>;
                var g = new GlbMaterial();
                if (m == null) { result.Add(g); continue; }
                g.Name = Json.GetString(m, "name");
                var pbr = Json.GetObject(m, "pbrMetallicRoughness");
                if (pbr != null)
                {
                    g.BaseColorImage = TexRef(Json.GetObject(pbr, "baseColorTexture"));
                    g.MetallicRoughnessImage = TexRef(Json.GetObject(pbr, "metallicRoughnessTexture"));
                    var f = Json.GetList(pbr, "baseColorFactor");
                    if (f.Count == 4)
                        for (int i = 0; i < 4; i++) g.BaseColorFactor[i] = f[i] is double ? (double)f[i] : 1.0;
                    g.MetallicFactor = Json.GetDouble(pbr, "metallicFactor", 1);
                    g.RoughnessFactor = Json.GetDouble(pbr, "roughnessFactor", 1);
                }
                g.NormalImage = TexRef(Json.GetObject(m, "normalTexture"));
                g.OcclusionImage = TexRef(Json.GetObject(m, "occlusionTexture"));
                g.EmissiveImage = TexRef(Json.GetObject(m, "emissiveTexture"));
                g.AlphaMode = Json.GetString(m, "alphaMode", "OPAQUE");
                g.AlphaCutoff = Json.GetDouble(m, "alphaCutoff", 0.5);
                g.DoubleSided = Json.GetBool(m, "doubleSided");
                result.Add(g);
            }
            return result;
        }

        int TexRef(Dictionary<string, object> info)
        {
            if (info == null) return -1;
            return TextureImage((int)Json.GetLong(info, "index", -1));
        }

        public List<string> NodeNames()
        {
            var names = new List<string>();
            foreach (object o in Array("nodes"))
                names.Add(Json.GetString(o as Dictionary<string, object>, "name"));
            return names;
        }

        public Dictionary<string, object> AssetExtras()
        {
            return Json.GetObject(Json.GetObject(Gltf, "asset"), "extras") ?? new Dictionary<string, object>();
        }

        public int MeshCount { get { return Array("meshes").Count; } }
    }

    /// <summary>
    /// Node-name conventions of the PropForge GLB (docs/http-api.md, "Result GLB"): `name_LOD0`, `name_LOD1`, ...
    /// are levels of detail (0 = full); `name-colonly` (Godot's import suffix; also `-col`, `_collider`, `UCX_name`)
    /// is a collision-only mesh.
    /// </summary>
    public static class PropNaming
    {
        static readonly Regex Lod = new Regex(@"(?:_|-|\s)LOD_?(\d+)$", RegexOptions.IgnoreCase | RegexOptions.CultureInvariant);

        /// <summary>LOD level encoded in a node name, or -1.</summary>
        public static int LodIndex(string nodeName)
        {
            var m = Lod.Match(nodeName ?? "");
            if (!m.Success) return -1;
            int level;
            return int.TryParse(m.Groups[1].Value, out level) ? level : -1;
        }

        public static bool IsCollision(string nodeName)
        {
            string n = (nodeName ?? "").ToLowerInvariant();
            return n.EndsWith("-colonly") || n.EndsWith("-convcolonly") || n.EndsWith("-col") || n.EndsWith("_collider")
                || n.EndsWith("_collision") || n.StartsWith("ucx_");
        }

        /// <summary>Screen-relative transition heights for n LOD levels (what Unity's LODGroup wants), last one culls.</summary>
        public static float[] LodTransitions(int levels)
        {
            var t = new float[levels];
            float h = 0.5f;
            for (int i = 0; i < levels; i++)
            {
                t[i] = i == levels - 1 ? Math.Min(h, 0.02f) : h;
                h *= 0.5f;
            }
            return t;
        }
    }
}
