// Pixel conversions from glTF's metallicRoughness texture (G = roughness, B = metallic) to the packed
// maps Unity's render pipelines read. Plain byte arrays (RGBA32, what Texture2D.GetRawTextureData /
// GetPixels32 give) so the conversion is tested outside Unity.
using System;

namespace PropForge.Client
{
    public static class MaterialMaps
    {
        /// <summary>URP Lit / Built-in Standard `_MetallicGlossMap`: R = metallic, A = smoothness (= 1 - roughness).</summary>
        public static byte[] ToMetallicSmoothness(byte[] metallicRoughnessRgba, double metallicFactor, double roughnessFactor)
        {
            Check(metallicRoughnessRgba, "metallicRoughness");
            var o = new byte[metallicRoughnessRgba.Length];
            for (int i = 0; i < o.Length; i += 4)
            {
                byte metal = Scale(metallicRoughnessRgba[i + 2], metallicFactor);
                byte rough = Scale(metallicRoughnessRgba[i + 1], roughnessFactor);
                o[i] = metal;
                o[i + 1] = metal;
                o[i + 2] = metal;
                o[i + 3] = (byte)(255 - rough);
            }
            return o;
        }

        /// <summary>HDRP Lit mask map: R = metallic, G = ambient occlusion, B = detail mask, A = smoothness.</summary>
        public static byte[] ToHdrpMaskMap(byte[] metallicRoughnessRgba, byte[] occlusionRgba, double metallicFactor, double roughnessFactor)
        {
            Check(metallicRoughnessRgba, "metallicRoughness");
            if (occlusionRgba != null && occlusionRgba.Length != metallicRoughnessRgba.Length)
                throw new ArgumentException("occlusion and metallicRoughness textures differ in size");
            var o = new byte[metallicRoughnessRgba.Length];
            for (int i = 0; i < o.Length; i += 4)
            {
                o[i] = Scale(metallicRoughnessRgba[i + 2], metallicFactor);
                o[i + 1] = occlusionRgba != null ? occlusionRgba[i] : (byte)255;  // glTF occlusion is in R
                o[i + 2] = 255;
                o[i + 3] = (byte)(255 - Scale(metallicRoughnessRgba[i + 1], roughnessFactor));
            }
            return o;
        }

        static byte Scale(byte v, double factor)
        {
            double x = v * Math.Max(0.0, Math.Min(1.0, factor));
            return (byte)Math.Max(0, Math.Min(255, (int)Math.Round(x)));
        }

        static void Check(byte[] rgba, string what)
        {
            if (rgba == null || rgba.Length == 0 || rgba.Length % 4 != 0)
                throw new ArgumentException(what + " pixels must be RGBA32 (length a multiple of 4)");
        }
    }
}
