// Per-user settings in EditorPrefs (never in the project, so the token is not committed) and the
// per-project folders the plugin uses.
using System.IO;
using PropForge.Client;
using UnityEditor;
using UnityEngine;

namespace PropForge.Editor
{
    internal static class PropForgeSettings
    {
        const string AddressKey = "PropForge.Server.Address";
        const string TokenKey = "PropForge.Server.Token";
        const string OptionsKey = "PropForge.Options";
        const string PlaceKey = "PropForge.PlaceInScene";
        const string RandomSeedKey = "PropForge.RandomSeed";

        public const string GeneratedFolder = "Assets/PropForge/Generated";
        public static readonly string[] Qualities = { "draft", "standard", "high" };
        public static readonly int[] TextureSizes = { 256, 512, 1024, 2048, 4096 };
        public static readonly string[] Collisions = { "none", "convex", "mesh" };
        public const int MaxLods = 4;

        public static string Address
        {
            get { return EditorPrefs.GetString(AddressKey, PropForgeClient.DefaultAddress); }
            set { EditorPrefs.SetString(AddressKey, (value ?? "").Trim()); }
        }

        public static string Token
        {
            get { return EditorPrefs.GetString(TokenKey, ""); }
            set { EditorPrefs.SetString(TokenKey, (value ?? "").Trim()); }
        }

        public static bool PlaceInScene
        {
            get { return EditorPrefs.GetBool(PlaceKey, true); }
            set { EditorPrefs.SetBool(PlaceKey, value); }
        }

        public static bool RandomSeed
        {
            get { return EditorPrefs.GetBool(RandomSeedKey, true); }
            set { EditorPrefs.SetBool(RandomSeedKey, value); }
        }

        /// <summary>Last used options (quality, faces, texture size, height, LODs, collision, seed, backend).</summary>
        public static JobOptions Options
        {
            get
            {
                string json = EditorPrefs.GetString(OptionsKey, "");
                if (json.Length > 0)
                {
                    try { return JobOptions.FromJson(Json.ParseObject(json)); }
                    catch (System.FormatException) { }
                }
                return new JobOptions { Quality = "standard", Faces = 20000, TextureSize = 1024, Height = 1f, HasSeed = true };
            }
            set { EditorPrefs.SetString(OptionsKey, value.ToString()); }
        }

        /// <summary>Project root (the folder holding Assets/ and Library/).</summary>
        public static string ProjectRoot
        {
            get { return Directory.GetParent(Application.dataPath).FullName; }
        }

        /// <summary>Partial downloads live here, outside Assets/, so Unity never imports half a GLB.</summary>
        public static string DownloadFolder
        {
            get { return Path.Combine(ProjectRoot, "Library", "PropForge", "Downloads"); }
        }

        public static string StateFolder
        {
            get { return Path.Combine(ProjectRoot, "Library", "PropForge"); }
        }

        public static PropForgeClient NewClient()
        {
            return new PropForgeClient(Address, Token);
        }
    }
}
