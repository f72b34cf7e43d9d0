// Where a finished prop goes: at the GameObject selected when the job started, or in place of a
// selected placeholder cube (its bounds give position, rotation and the generated height). One Undo
// step reverts the whole placement.
using UnityEditor;
using UnityEngine;

namespace PropForge.Editor
{
    internal sealed class PlacementTarget
    {
        public GameObject Target;      // null: at the Scene view pivot
        public bool Replace;           // Target is a placeholder cube to replace
        public Vector3 Position;       // bottom centre (world)
        public Quaternion Rotation = Quaternion.identity;
        public Vector3 Size;           // placeholder size in metres (world)
    }

    internal static class Placement
    {
        /// <summary>A placeholder: a GameObject rendering Unity's cube primitive, or named "placeholder".</summary>
        public static bool IsPlaceholder(GameObject go)
        {
            if (go == null) return false;
            var filter = go.GetComponent<MeshFilter>();
            if (filter == null || filter.sharedMesh == null) return false;
            return filter.sharedMesh.name == "Cube" || go.name.ToLowerInvariant().Contains("placeholder");
        }

        /// <summary>Captured at submit time (the selection changes while the job runs).</summary>
        public static PlacementTarget Capture()
        {
            var go = Selection.activeGameObject;
            if (go != null && EditorUtility.IsPersistent(go)) go = null;  // a project asset, not a scene object
            var t = new PlacementTarget { Target = go };
            if (go == null)
            {
                var view = SceneView.lastActiveSceneView;
                t.Position = view != null ? view.pivot : Vector3.zero;
                return t;
            }
            t.Position = go.transform.position;
            t.Rotation = go.transform.rotation;
            if (IsPlaceholder(go))
            {
                var b = go.GetComponent<MeshFilter>().sharedMesh.bounds;
                var s = go.transform.lossyScale;
                t.Replace = true;
                t.Size = new Vector3(Mathf.Abs(b.size.x * s.x), Mathf.Abs(b.size.y * s.y), Mathf.Abs(b.size.z * s.z));
                t.Position = go.transform.TransformPoint(new Vector3(b.center.x, b.min.y, b.center.z));
            }
            return t;
        }

        /// <summary>Instances the prefab; returns "" or why it could not be placed.</summary>
        public static string Place(GameObject prefab, PlacementTarget t)
        {
            if (t.Replace && t.Target == null) return "the placeholder was deleted meanwhile";
            int group = Undo.GetCurrentGroup();
            Undo.SetCurrentGroupName("PropForge: place " + prefab.name);
            var inst = (GameObject)PrefabUtility.InstantiatePrefab(prefab);
            Undo.RegisterCreatedObjectUndo(inst, "PropForge: place " + prefab.name);
            if (t.Target != null)
            {
                inst.transform.SetParent(t.Target.transform.parent, true);
                if (t.Target.scene.IsValid() && inst.scene != t.Target.scene && t.Target.transform.parent == null)
                    UnityEngine.SceneManagement.SceneManager.MoveGameObjectToScene(inst, t.Target.scene);
            }
            inst.transform.SetPositionAndRotation(t.Position, t.Rotation);
            if (t.Replace)
            {
                FitInside(inst, t.Size);
                inst.transform.SetSiblingIndex(t.Target.transform.GetSiblingIndex());
                Undo.DestroyObjectImmediate(t.Target);
            }
            Undo.CollapseUndoOperations(group);
            Selection.activeGameObject = inst;
            return "";
        }

        /// <summary>The server generated the prop at the box's height; shrink uniformly if its footprint is wider.</summary>
        static void FitInside(GameObject inst, Vector3 size)
        {
            var renderers = inst.GetComponentsInChildren<Renderer>();
            if (renderers.Length == 0) return;
            var rot = inst.transform.rotation;
            inst.transform.rotation = Quaternion.identity;  // measure axis-aligned with the box
            var b = renderers[0].bounds;
            foreach (var r in renderers) b.Encapsulate(r.bounds);
            inst.transform.rotation = rot;
            float s = 1f;
            for (int i = 0; i < 3; i++)
                if (b.size[i] > 1e-4f && size[i] > 0f) s = Mathf.Min(s, size[i] / b.size[i]);
            inst.transform.localScale = inst.transform.localScale * s;
        }
    }
}
