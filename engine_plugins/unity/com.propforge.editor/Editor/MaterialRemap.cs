// glTF PBR metallic-roughness -> a Unity material for the active render pipeline: URP Lit, HDRP Lit
// (with a mask map) or Built-in Standard. Texture images come straight out of the GLB (the PNG/JPEG
// fallback of WebP textures); channel packing is done by PropForge.Client.MaterialMaps.
using System.Collections.Generic;
using System.IO;
using PropForge.Client;
using UnityEditor;
using UnityEngine;
using UnityEngine.Rendering;

namespace PropForge.Editor
{
    internal enum Pipeline { BuiltIn, Urp, Hdrp }

    internal static class MaterialRemap
    {
        public static Pipeline Detect()
        {
            var rp = GraphicsSettings.currentRenderPipeline;
            if (rp == null) return Pipeline.BuiltIn;
            string type = rp.GetType().Name;
            if (type.Contains("HDRenderPipeline")) return Pipeline.Hdrp;
            return Pipeline.Urp;  // URP, or a custom SRP: URP Lit is the closest common shader
        }

        public static string PipelineName()
        {
            switch (Detect())
            {
                case Pipeline.Hdrp: return "HDRP Lit";
                case Pipeline.Urp: return "URP Lit";
                default: return "Built-in Standard";
            }
        }

        /// <summary>One material asset per glTF material (mats = doc.Materials()), index-aligned; updated in place on regeneration (GUIDs kept).</summary>
        public static List<Material> Build(GlbDocument doc, List<GlbMaterial> mats, string folder, string baseName)
        {
            var result = new List<Material>();
            var pipeline = Detect();
            for (int i = 0; i < mats.Count; i++)
            {
                string stem = folder + "/" + baseName + (mats.Count > 1 ? "_" + i : "");
                result.Add(BuildOne(doc, mats[i], pipeline, stem));
            }
            return result;
        }

        static Material BuildOne(GlbDocument doc, GlbMaterial m, Pipeline pipeline, string stem)
        {
            Texture2D baseColor = SaveImage(doc, m.BaseColorImage, stem + "_BaseColor.png", true, null);
            Texture2D packed = null;
            if (m.MetallicRoughnessImage >= 0)
            {
                byte[] ao = null;
                if (pipeline == Pipeline.Hdrp && m.OcclusionImage >= 0) ao = Pixels(doc, m.OcclusionImage);
                packed = SaveImage(doc, m.MetallicRoughnessImage,
                    stem + (pipeline == Pipeline.Hdrp ? "_MaskMap.png" : "_MetallicSmoothness.png"), false,
                    rgba => pipeline == Pipeline.Hdrp
                        ? MaterialMaps.ToHdrpMaskMap(rgba, ao != null && ao.Length == rgba.Length ? ao : null, m.MetallicFactor, m.RoughnessFactor)
                        : MaterialMaps.ToMetallicSmoothness(rgba, m.MetallicFactor, m.RoughnessFactor));
            }
            var color = new Color((float)m.BaseColorFactor[0], (float)m.BaseColorFactor[1], (float)m.BaseColorFactor[2], (float)m.BaseColorFactor[3]);
            Material mat;
            switch (pipeline)
            {
                case Pipeline.Hdrp: mat = Hdrp(baseColor, packed, color, m); break;
                case Pipeline.Urp: mat = Urp(baseColor, packed, color, m); break;
                default: mat = Standard(baseColor, packed, color, m); break;
            }
            mat.name = Path.GetFileName(stem);
            string path = stem + ".mat";
            var existing = AssetDatabase.LoadAssetAtPath<Material>(path);
            if (existing == null)
            {
                AssetDatabase.CreateAsset(mat, path);
                return mat;
            }
            existing.shader = mat.shader;
            existing.CopyPropertiesFromMaterial(mat);
            existing.shaderKeywords = mat.shaderKeywords;
            existing.renderQueue = mat.renderQueue;
            EditorUtility.SetDirty(existing);
            Object.DestroyImmediate(mat);
            return existing;
        }

        static Shader Find(string name)
        {
            var s = Shader.Find(name);
            if (s == null) throw new System.InvalidOperationException("shader '" + name + "' not found: is the render pipeline package installed?");
            return s;
        }

        static Material Urp(Texture2D baseColor, Texture2D metalSmooth, Color color, GlbMaterial m)
        {
            var mat = new Material(Find("Universal Render Pipeline/Lit"));
            mat.SetTexture("_BaseMap", baseColor);
            mat.SetColor("_BaseColor", color);
            if (metalSmooth != null)
            {
                mat.SetTexture("_MetallicGlossMap", metalSmooth);
                mat.EnableKeyword("_METALLICSPECGLOSSMAP");
                mat.SetFloat("_Smoothness", 1f);
            }
            else
            {
                mat.SetFloat("_Metallic", (float)m.MetallicFactor);
                mat.SetFloat("_Smoothness", 1f - (float)m.RoughnessFactor);
            }
            if (m.AlphaMode == "MASK")
            {
                mat.SetFloat("_AlphaClip", 1f);
                mat.SetFloat("_Cutoff", (float)m.AlphaCutoff);
                mat.EnableKeyword("_ALPHATEST_ON");
                mat.renderQueue = (int)RenderQueue.AlphaTest;
            }
            else if (m.AlphaMode == "BLEND")
            {
                mat.SetFloat("_Surface", 1f);
                mat.SetFloat("_Blend", 0f);
                mat.SetFloat("_SrcBlend", (float)BlendMode.SrcAlpha);
                mat.SetFloat("_DstBlend", (float)BlendMode.OneMinusSrcAlpha);
                mat.SetFloat("_ZWrite", 0f);
                mat.EnableKeyword("_SURFACE_TYPE_TRANSPARENT");
                mat.renderQueue = (int)RenderQueue.Transparent;
            }
            mat.SetFloat("_Cull", m.DoubleSided ? 0f : 2f);
            return mat;
        }

        static Material Hdrp(Texture2D baseColor, Texture2D mask, Color color, GlbMaterial m)
        {
            var mat = new Material(Find("HDRP/Lit"));
            mat.SetTexture("_BaseColorMap", baseColor);
            mat.SetColor("_BaseColor", color);
            if (mask != null)
            {
                mat.SetTexture("_MaskMap", mask);
                mat.EnableKeyword("_MASKMAP");
                mat.SetFloat("_MetallicRemapMin", 0f);
                mat.SetFloat("_MetallicRemapMax", 1f);
                mat.SetFloat("_SmoothnessRemapMin", 0f);
                mat.SetFloat("_SmoothnessRemapMax", 1f);
            }
            else
            {
                mat.SetFloat("_Metallic", (float)m.MetallicFactor);
                mat.SetFloat("_Smoothness", 1f - (float)m.RoughnessFactor);
            }
            if (m.AlphaMode == "MASK")
            {
                mat.SetFloat("_AlphaCutoffEnable", 1f);
                mat.SetFloat("_AlphaCutoff", (float)m.AlphaCutoff);
                mat.EnableKeyword("_ALPHATEST_ON");
            }
            else if (m.AlphaMode == "BLEND")
            {
                mat.SetFloat("_SurfaceType", 1f);
                mat.EnableKeyword("_SURFACE_TYPE_TRANSPARENT");
                mat.renderQueue = (int)RenderQueue.Transparent;
            }
            mat.SetFloat("_DoubleSidedEnable", m.DoubleSided ? 1f : 0f);
            return mat;
        }

        static Material Standard(Texture2D baseColor, Texture2D metalSmooth, Color color, GlbMaterial m)
        {
            var mat = new Material(Find("Standard"));
            mat.SetTexture("_MainTex", baseColor);
            mat.SetColor("_Color", color);
            if (metalSmooth != null)
            {
                mat.SetTexture("_MetallicGlossMap", metalSmooth);
                mat.EnableKeyword("_METALLICGLOSSMAP");
                mat.SetFloat("_GlossMapScale", 1f);
            }
            else
            {
                mat.SetFloat("_Metallic", (float)m.MetallicFactor);
                mat.SetFloat("_Glossiness", 1f - (float)m.RoughnessFactor);
            }
            if (m.AlphaMode == "MASK")
            {
                mat.SetFloat("_Mode", 1f);
                mat.SetFloat("_Cutoff", (float)m.AlphaCutoff);
                mat.EnableKeyword("_ALPHATEST_ON");
                mat.renderQueue = (int)RenderQueue.AlphaTest;
            }
            else if (m.AlphaMode == "BLEND")
            {
                mat.SetFloat("_Mode", 2f);
                mat.SetInt("_SrcBlend", (int)BlendMode.SrcAlpha);
                mat.SetInt("_DstBlend", (int)BlendMode.OneMinusSrcAlpha);
                mat.SetInt("_ZWrite", 0);
                mat.EnableKeyword("_ALPHABLEND_ON");
                mat.renderQueue = (int)RenderQueue.Transparent;
            }
            return mat;
        }

        /// <summary>RGBA32 pixels of a GLB image (decoded by Unity).</summary>
        static byte[] Pixels(GlbDocument doc, int image)
        {
            int w, h;
            return Decode(doc, image, out w, out h);
        }

        static byte[] Decode(GlbDocument doc, int image, out int width, out int height)
        {
            width = height = 0;
            string mime;
            byte[] encoded = doc.ImageBytes(image, out mime);
            if (encoded == null) return null;
            var tex = new Texture2D(2, 2, TextureFormat.RGBA32, false);
            try
            {
                if (!tex.LoadImage(encoded)) return null;
                width = tex.width;
                height = tex.height;
                var px = tex.GetPixels32();
                var rgba = new byte[px.Length * 4];
                for (int i = 0; i < px.Length; i++)
                {
                    rgba[4 * i] = px[i].r; rgba[4 * i + 1] = px[i].g; rgba[4 * i + 2] = px[i].b; rgba[4 * i + 3] = px[i].a;
                }
                return rgba;
            }
            finally { Object.DestroyImmediate(tex); }
        }

        /// <summary>Writes a GLB image (optionally re-packed) as a PNG asset with the right colour space.</summary>
        static Texture2D SaveImage(GlbDocument doc, int image, string assetPath, bool srgb, System.Func<byte[], byte[]> convert)
        {
            if (image < 0) return null;
            int w, h;
            byte[] rgba = Decode(doc, image, out w, out h);
            if (rgba == null) return null;
            if (convert != null) rgba = convert(rgba);
            var tex = new Texture2D(w, h, TextureFormat.RGBA32, false);
            try
            {
                var px = new Color32[w * h];
                for (int i = 0; i < px.Length; i++) px[i] = new Color32(rgba[4 * i], rgba[4 * i + 1], rgba[4 * i + 2], rgba[4 * i + 3]);
                tex.SetPixels32(px);
                tex.Apply();
                string full = Path.Combine(PropForgeSettings.ProjectRoot, assetPath);
                Directory.CreateDirectory(PropForgeSettings.StateFolder);  // temp outside Assets/, same volume
                string tmp = Path.Combine(PropForgeSettings.StateFolder, Path.GetFileName(full) + ".tmp");
                File.WriteAllBytes(tmp, tex.EncodeToPNG());
                JobRunner.MoveIntoPlace(tmp, full);
            }
            finally { Object.DestroyImmediate(tex); }
            AssetDatabase.ImportAsset(assetPath, ImportAssetOptions.ForceUpdate);
            var importer = AssetImporter.GetAtPath(assetPath) as TextureImporter;
            if (importer != null && importer.sRGBTexture != srgb)
            {
                importer.sRGBTexture = srgb;
                importer.SaveAndReimport();
            }
            return AssetDatabase.LoadAssetAtPath<Texture2D>(assetPath);
        }
    }
}
