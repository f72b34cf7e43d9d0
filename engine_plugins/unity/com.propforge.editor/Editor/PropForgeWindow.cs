// Window > PropForge: server + token (EditorPrefs), options, running jobs with progress and cancel,
// history with re-run (same seed), place and ping. Thin: all work is in PropForgeJobs / the client.
using System.Collections.Generic;
using System.IO;
using System.Threading;
using System.Threading.Tasks;
using PropForge.Client;
using UnityEditor;
using UnityEngine;

namespace PropForge.Editor
{
    internal sealed class PropForgeWindow : EditorWindow
    {
        static readonly string[] QualityLabels = { "Draft", "Standard", "High" };
        static readonly string[] TextureLabels = { "256", "512", "1024", "2048", "4096" };
        static readonly string[] CollisionLabels = { "None", "Convex hull", "Mesh (decimated)" };

        JobOptions options;
        string[] backends = { "auto" };
        int backendIndex;
        string connection = "";
        Vector2 scroll;
        int selectedHistory = -1;

        [MenuItem("Window/PropForge")]
        public static void Open()
        {
            GetWindow<PropForgeWindow>("PropForge").Show();
        }

        /// <summary>Generate for images with the window's current options (menu item, buttons).</summary>
        public static void GenerateFor(List<string> images)
        {
            var w = GetWindow<PropForgeWindow>("PropForge");
            w.Start(images);
        }

        void OnEnable()
        {
            options = PropForgeSettings.Options;
            PropForgeJobs.Changed += Repaint;
        }

        void OnDisable()
        {
            PropForgeJobs.Changed -= Repaint;
            PropForgeSettings.Options = options;
        }

        void OnGUI()
        {
            scroll = EditorGUILayout.BeginScrollView(scroll);
            DrawServer();
            DrawOptions();
            DrawMessage();
            DrawJobs();
            DrawHistory();
            EditorGUILayout.EndScrollView();
        }

        void DrawServer()
        {
            EditorGUILayout.LabelField("Server", EditorStyles.boldLabel);
            EditorGUI.BeginChangeCheck();
            string address = EditorGUILayout.TextField("Address", PropForgeSettings.Address);
            string token = EditorGUILayout.PasswordField(new GUIContent("Token", "Stored in EditorPrefs for this user, never in the project."), PropForgeSettings.Token);
            if (EditorGUI.EndChangeCheck())
            {
                PropForgeSettings.Address = address;
                PropForgeSettings.Token = token;
            }
            using (new EditorGUILayout.HorizontalScope())
            {
                if (GUILayout.Button("Check connection", GUILayout.Width(140))) CheckConnection();
                EditorGUILayout.LabelField(connection, EditorStyles.wordWrappedMiniLabel);
            }
        }

        /// <summary>Health, then the backend list (which also proves the token); off the main thread.</summary>
        void CheckConnection()
        {
            connection = "checking...";
            PropForgeClient client;
            try { client = PropForgeSettings.NewClient(); }
            catch (PropForgeException e) { connection = e.Message; return; }
            Task.Run(async () =>
            {
                string text;
                string[] names = null;
                try
                {
                    using (var cts = new CancellationTokenSource(15000))
                    {
                        bool ready = await client.IsReadyAsync(cts.Token);
                        var list = await client.ListBackendsAsync(cts.Token);
                        var n = new List<string> { "auto" };
                        var shown = new List<string>();
                        foreach (var b in list)
                        {
                            if (b.Available) n.Add(b.Name);
                            shown.Add(b.Name + (b.Available ? "" : " (unavailable: " + b.Reason + ")"));
                        }
                        names = n.ToArray();
                        text = (ready ? "connected: " : "connected, not ready yet: ") + string.Join(", ", shown.ToArray());
                    }
                }
                catch (PropForgeException e) { text = e.Message; }
                catch (System.OperationCanceledException) { text = "no answer within 15 s"; }
                finally { client.Dispose(); }
                MainThread.Post(() =>
                {
                    connection = text;
                    if (names != null) backends = names;
                    Repaint();
                });
            });
        }

        void DrawOptions()
        {
            EditorGUILayout.Space();
            EditorGUILayout.LabelField("Options", EditorStyles.boldLabel);
            int q = System.Array.IndexOf(PropForgeSettings.Qualities, options.Quality);
            options.Quality = PropForgeSettings.Qualities[EditorGUILayout.Popup("Quality", q < 0 ? 1 : q, QualityLabels)];
            backendIndex = EditorGUILayout.Popup("Backend", Mathf.Clamp(backendIndex, 0, backends.Length - 1), backends);
            options.Backend = backendIndex <= 0 ? "" : backends[backendIndex];
            options.Faces = Mathf.Clamp(EditorGUILayout.IntField("Face budget", options.Faces), 100, 2000000);
            int t = System.Array.IndexOf(PropForgeSettings.TextureSizes, options.TextureSize);
            options.TextureSize = PropForgeSettings.TextureSizes[EditorGUILayout.Popup("Texture size", t < 0 ? 2 : t, TextureLabels)];
            options.Height = Mathf.Clamp(EditorGUILayout.FloatField("Height (m)", options.Height), 0.01f, 1000f);
            // LOD1..LODn (about half the faces each, LOD0's textures) -> a LODGroup on the prefab
            options.Lods = EditorGUILayout.IntSlider("Extra LODs", options.Lods, 0, PropForgeSettings.MaxLods);
            // convex: hull (<= 255 triangles) -> convex MeshCollider; mesh: decimated copy -> MeshCollider
            int c = System.Array.IndexOf(PropForgeSettings.Collisions, string.IsNullOrEmpty(options.Collision) ? "none" : options.Collision);
            options.Collision = PropForgeSettings.Collisions[EditorGUILayout.Popup("Collision", c < 0 ? 0 : c, CollisionLabels)];
            using (new EditorGUILayout.HorizontalScope())
            {
                // EditorPrefs are written only when a toggle changes, not on every GUI event
                bool randomSeed = PropForgeSettings.RandomSeed;
                bool newRandomSeed = EditorGUILayout.ToggleLeft("Random seed", randomSeed, GUILayout.Width(110));
                if (newRandomSeed != randomSeed) PropForgeSettings.RandomSeed = newRandomSeed;
                using (new EditorGUI.DisabledScope(newRandomSeed))
                    options.Seed = (ulong)System.Math.Max(0L, EditorGUILayout.LongField("Seed", (long)options.Seed));
            }
            bool place = PropForgeSettings.PlaceInScene;
            bool newPlace = EditorGUILayout.ToggleLeft(
                "Place in scene (at the selected GameObject / replace a placeholder cube)", place);
            if (newPlace != place) PropForgeSettings.PlaceInScene = newPlace;
            var selected = PropForgeMenu.SelectedImages();
            using (new EditorGUI.DisabledScope(selected.Count == 0))
            {
                if (GUILayout.Button("Generate from selected images")) Start(selected);
            }
            if (GUILayout.Button("Generate from image file...")) PickFile();
        }

        void PickFile()
        {
            string path = EditorUtility.OpenFilePanelWithFilters("Generate 3D from image", "", new[] { "Images", "png,jpg,jpeg,webp" });
            if (!string.IsNullOrEmpty(path)) Start(new List<string> { path });
        }

        void Start(List<string> images)
        {
            if (images.Count == 0)
            {
                PropForgeJobs.Report("select PNG, JPEG or WebP images first", true);
                return;
            }
            var place = PropForgeSettings.PlaceInScene && images.Count == 1 ? Placement.Capture() : null;
            foreach (string image in images)
            {
                var o = options.Clone();
                if (PropForgeSettings.RandomSeed) o.Seed = (ulong)Random.Range(0, int.MaxValue);
                o.HasSeed = true;
                if (place != null && place.Replace) o.Height = Mathf.Clamp(place.Size.y, 0.01f, 1000f);
                PropForgeJobs.Generate(image, o, place);
                place = null;  // only the first of a batch is placed
            }
            PropForgeSettings.Options = options;
        }

        void DrawMessage()
        {
            if (!string.IsNullOrEmpty(PropForgeJobs.Message))
                EditorGUILayout.HelpBox(PropForgeJobs.Message, PropForgeJobs.MessageIsError ? MessageType.Error : MessageType.Info);
        }

        void DrawJobs()
        {
            EditorGUILayout.Space();
            EditorGUILayout.LabelField("Running", EditorStyles.boldLabel);
            bool any = false;
            foreach (var r in PropForgeJobs.Running)
            {
                any = true;
                using (new EditorGUILayout.HorizontalScope())
                {
                    var rect = EditorGUILayout.GetControlRect(GUILayout.Height(18));
                    string eta = r.EtaSeconds >= 0 ? " (ETA " + Mathf.CeilToInt((float)r.EtaSeconds) + " s)" : "";
                    EditorGUI.ProgressBar(rect, (float)r.Fraction, Path.GetFileName(r.OutputPath) + ": " + r.Description + eta);
                    if (GUILayout.Button("Cancel", GUILayout.Width(60))) PropForgeJobs.Cancel(r);
                }
            }
            if (!any) EditorGUILayout.LabelField("no jobs", EditorStyles.miniLabel);
        }

        void DrawHistory()
        {
            EditorGUILayout.Space();
            EditorGUILayout.LabelField("History", EditorStyles.boldLabel);
            var h = PropForgeJobs.History;
            for (int i = 0; i < h.Count; i++)
            {
                var e = h[i];
                string label = "[" + e.State + "] " + Path.GetFileName(e.Output) + "  " + e.Options.Quality + ", seed " + e.Options.Seed
                    + ", " + e.Options.Faces + " faces, " + e.Options.TextureSize + " px"
                    + (e.Options.Lods > 0 ? ", " + e.Options.Lods + " LODs" : "")
                    + (string.IsNullOrEmpty(e.Options.Collision) || e.Options.Collision == "none" ? "" : ", " + e.Options.Collision + " collider");
                var content = new GUIContent(label, e.Error.Length > 0 ? e.Error : e.Source + "\n" + e.Time);
                bool on = GUILayout.Toggle(selectedHistory == i, content, EditorStyles.miniButton);
                if (on) selectedHistory = i;
            }
            if (selectedHistory < 0 || selectedHistory >= h.Count) return;
            var sel = h[selectedHistory];
            using (new EditorGUILayout.HorizontalScope())
            {
                if (GUILayout.Button("Re-run (same seed)"))
                    PropForgeJobs.Rerun(sel, PropForgeSettings.PlaceInScene ? Placement.Capture() : null);
                using (new EditorGUI.DisabledScope(sel.Prefab.Length == 0))
                {
                    if (GUILayout.Button("Place"))
                    {
                        var prefab = AssetDatabase.LoadAssetAtPath<GameObject>(sel.Prefab);
                        if (prefab == null) PropForgeJobs.Report(sel.Prefab + " is gone", true);
                        else Placement.Place(prefab, Placement.Capture());
                    }
                    if (GUILayout.Button("Ping")) EditorGUIUtility.PingObject(AssetDatabase.LoadMainAssetAtPath(sel.Prefab));
                }
            }
        }

        void OnInspectorUpdate()
        {
            foreach (var r in PropForgeJobs.Running) { Repaint(); break; }
        }
    }
}
