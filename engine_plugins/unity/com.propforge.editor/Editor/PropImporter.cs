// GLB (imported by glTFast's ScriptedImporter) -> prefab next to it with materials for the active
// render pipeline, a LODGroup when the GLB has `_LOD<n>` nodes and a MeshCollider from a collision
// node (`-colonly`, `_collider`, `UCX_`). The prefab is a variant of the imported model, so a
// regenerated GLB flows into every scene that uses the prefab.
using System.Collections.Generic;
using System.IO;
using PropForge.Client;
using UnityEditor;
using UnityEngine;

namespace PropForge.Editor
{
    internal static class PropImporter
    {
        public static GameObject Import(string glbAssetPath, out string message)
        {
            AssetDatabase.ImportAsset(glbAssetPath, ImportAssetOptions.ForceUpdate);
            var model = AssetDatabase.LoadAssetAtPath<GameObject>(glbAssetPath);
            if (model == null)
            {
                message = glbAssetPath + " was saved but Unity did not import it as a model: is glTFast (com.unity.cloud.gltfast) installed?";
                return null;
            }
            string folder = Path.GetDirectoryName(glbAssetPath).Replace('\\', '/');
            string baseName = Path.GetFileNameWithoutExtension(glbAssetPath);
            GlbDocument doc;
            try { doc = GlbDocument.ReadFile(Path.Combine(PropForgeSettings.ProjectRoot, glbAssetPath)); }
            catch (System.FormatException e) { message = glbAssetPath + " is not a readable GLB: " + e.Message; return null; }

            var gltfMaterials = doc.Materials();  // parsed once for both the assets and the assignment
            var materials = MaterialRemap.Build(doc, gltfMaterials, folder, baseName);
            var instance = PrefabUtility.InstantiatePrefab(model) as GameObject;
            if (instance == null) instance = Object.Instantiate(model);
            try
            {
                AssignMaterials(instance, gltfMaterials, materials);
                int lods = SetupLods(instance);
                int colliders = SetupColliders(instance);
                string prefabPath = folder + "/" + baseName + ".prefab";
                var prefab = PrefabUtility.SaveAsPrefabAsset(instance, prefabPath);
                message = baseName + " imported (" + MaterialRemap.PipelineName() + " materials"
                    + (lods > 1 ? ", " + lods + " LODs" : "") + (colliders > 0 ? ", MeshCollider" : "") + ")";
                return prefab;
            }
            finally
            {
                Object.DestroyImmediate(instance);
            }
        }

        /// <summary>glTFast names Unity materials after the glTF ones; match by name, else by the single material.</summary>
        static void AssignMaterials(GameObject root, List<GlbMaterial> gltf, List<Material> materials)
        {
            if (materials.Count == 0) return;
            var names = new Dictionary<string, Material>();
            for (int i = 0; i < gltf.Count && i < materials.Count; i++)
                if (gltf[i].Name.Length > 0) names[gltf[i].Name] = materials[i];
            foreach (var r in root.GetComponentsInChildren<Renderer>(true))
            {
                var mats = r.sharedMaterials;
                for (int i = 0; i < mats.Length; i++)
                {
                    Material m;
                    if (mats[i] != null && names.TryGetValue(mats[i].name, out m)) mats[i] = m;
                    else if (materials.Count == 1 || mats[i] == null) mats[i] = materials[0];
                }
                r.sharedMaterials = mats;
            }
        }

        static int SetupLods(GameObject root)
        {
            var levels = new SortedDictionary<int, List<Renderer>>();
            foreach (var t in root.GetComponentsInChildren<Transform>(true))
            {
                int level = PropNaming.LodIndex(t.name);
                if (level < 0) continue;
                List<Renderer> list;
                if (!levels.TryGetValue(level, out list)) levels[level] = list = new List<Renderer>();
                list.AddRange(t.GetComponentsInChildren<Renderer>(true));
            }
            if (levels.Count < 2) return levels.Count;
            float[] heights = PropNaming.LodTransitions(levels.Count);
            var lods = new LOD[levels.Count];
            int k = 0;
            foreach (var kv in levels)
            {
                lods[k] = new LOD(heights[k], kv.Value.ToArray());
                k++;
            }
            var group = root.GetComponent<LODGroup>();  // not "??": Unity's fake-null objects
            if (group == null) group = root.AddComponent<LODGroup>();
            group.SetLODs(lods);
            group.RecalculateBounds();
            return levels.Count;
        }

        static int SetupColliders(GameObject root)
        {
            int n = 0;
            foreach (var t in root.GetComponentsInChildren<Transform>(true))
            {
                if (!PropNaming.IsCollision(t.name)) continue;
                var filter = t.GetComponent<MeshFilter>();
                if (filter == null || filter.sharedMesh == null) continue;
                var collider = t.gameObject.GetComponent<MeshCollider>();
                if (collider == null) collider = t.gameObject.AddComponent<MeshCollider>();
                collider.sharedMesh = filter.sharedMesh;
                collider.convex = t.name.ToLowerInvariant().Contains("convcolonly");
                var renderer = t.GetComponent<Renderer>();
                if (renderer != null) renderer.enabled = false;  // collision only: never drawn
                n++;
            }
            return n;
        }
    }
}
