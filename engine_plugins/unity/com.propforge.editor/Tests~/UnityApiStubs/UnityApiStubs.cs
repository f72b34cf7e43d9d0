// TYPE-CHECK ONLY. Signatures (no behaviour) of exactly the UnityEngine/UnityEditor members the
// PropForge Editor layer uses, copied from the Unity 2022.3 scripting reference, so CI (no Unity) can
// compile Editor/*.cs with mcs and catch type errors. Nothing here runs; bodies throw.
#pragma warning disable 0067, 0649
using System;
using System.Collections.Generic;

namespace UnityEngine
{
    public class Object
    {
        public string name { get; set; }
        public static T Instantiate<T>(T original) where T : Object { throw new NotImplementedException(); }
        public static void DestroyImmediate(Object obj) { throw new NotImplementedException(); }
        public static bool operator ==(Object a, Object b) { throw new NotImplementedException(); }
        public static bool operator !=(Object a, Object b) { throw new NotImplementedException(); }
        public static implicit operator bool(Object o) { throw new NotImplementedException(); }
        public override bool Equals(object other) { throw new NotImplementedException(); }
        public override int GetHashCode() { throw new NotImplementedException(); }
    }
    public class Component : Object
    {
        public Transform transform { get { throw new NotImplementedException(); } }
        public GameObject gameObject { get { throw new NotImplementedException(); } }
        public T GetComponent<T>() { throw new NotImplementedException(); }
        public T[] GetComponentsInChildren<T>(bool includeInactive) { throw new NotImplementedException(); }
    }
    public class Behaviour : Component { public bool enabled { get; set; } }
    public class Transform : Component, System.Collections.IEnumerable
    {
        public Vector3 position { get; set; }
        public Quaternion rotation { get; set; }
        public Vector3 lossyScale { get { throw new NotImplementedException(); } }
        public Vector3 localScale { get; set; }
        public Transform parent { get; set; }
        public void SetParent(Transform p, bool worldPositionStays) { }
        public void SetPositionAndRotation(Vector3 position, Quaternion rotation) { }
        public void SetSiblingIndex(int index) { }
        public int GetSiblingIndex() { throw new NotImplementedException(); }
        public Vector3 TransformPoint(Vector3 position) { throw new NotImplementedException(); }
        public System.Collections.IEnumerator GetEnumerator() { throw new NotImplementedException(); }
    }
    public sealed class GameObject : Object
    {
        public Transform transform { get { throw new NotImplementedException(); } }
        public SceneManagement.Scene scene { get { throw new NotImplementedException(); } }
        public T GetComponent<T>() { throw new NotImplementedException(); }
        public T AddComponent<T>() where T : Component { throw new NotImplementedException(); }
        public T[] GetComponentsInChildren<T>() { throw new NotImplementedException(); }
        public T[] GetComponentsInChildren<T>(bool includeInactive) { throw new NotImplementedException(); }
    }
    public class Renderer : Component
    {
        public Material[] sharedMaterials { get; set; }
        public Bounds bounds { get { throw new NotImplementedException(); } }
        public bool enabled { get; set; }
    }
    public sealed class MeshFilter : Component { public Mesh sharedMesh { get; set; } }
    public sealed class Mesh : Object { public Bounds bounds { get; set; } }
    public class Collider : Component { public bool enabled { get; set; } }
    public sealed class MeshCollider : Collider { public Mesh sharedMesh { get; set; } public bool convex { get; set; } }
    public sealed class LODGroup : Component { public void SetLODs(LOD[] lods) { } public void RecalculateBounds() { } }
    public struct LOD { public LOD(float screenRelativeTransitionHeight, Renderer[] renderers) { } }
    public class Shader : Object { public static Shader Find(string name) { throw new NotImplementedException(); } }
    public class Material : Object
    {
        public Material(Shader shader) { }
        public Shader shader { get; set; }
        public int renderQueue { get; set; }
        public string[] shaderKeywords { get; set; }
        public void SetTexture(string name, Texture value) { }
        public void SetColor(string name, Color value) { }
        public void SetFloat(string name, float value) { }
        public void SetInt(string name, int value) { }
        public void EnableKeyword(string keyword) { }
        public void CopyPropertiesFromMaterial(Material mat) { }
    }
    public class Texture : Object { public int width { get { throw new NotImplementedException(); } } public int height { get { throw new NotImplementedException(); } } }
    public enum TextureFormat { RGBA32 = 4 }
    public sealed class Texture2D : Texture
    {
        public Texture2D(int width, int height, TextureFormat format, bool mipChain) { }
        public Color32[] GetPixels32() { throw new NotImplementedException(); }
        public void SetPixels32(Color32[] colors) { }
        public void Apply() { }
    }
    public static class ImageConversion
    {
        public static bool LoadImage(this Texture2D tex, byte[] data) { throw new NotImplementedException(); }
        public static byte[] EncodeToPNG(this Texture2D tex) { throw new NotImplementedException(); }
    }
    public struct Color { public Color(float r, float g, float b, float a) { } }
    public struct Color32 { public byte r, g, b, a; public Color32(byte r, byte g, byte b, byte a) { this.r = r; this.g = g; this.b = b; this.a = a; } }
    public struct Vector2 { public Vector2(float x, float y) { } }
    public struct Vector3
    {
        public float x, y, z;
        public Vector3(float x, float y, float z) { this.x = x; this.y = y; this.z = z; }
        public static Vector3 zero { get { throw new NotImplementedException(); } }
        public float this[int index] { get { throw new NotImplementedException(); } set { } }
        public static Vector3 operator *(Vector3 a, float d) { throw new NotImplementedException(); }
    }
    public struct Quaternion { public static Quaternion identity { get { throw new NotImplementedException(); } } }
    public struct Bounds
    {
        public Vector3 size { get; set; }
        public Vector3 center { get; set; }
        public Vector3 min { get; set; }
        public void Encapsulate(Bounds b) { }
    }
    public struct Rect { }
    public static class Mathf
    {
        public static int Clamp(int v, int min, int max) { throw new NotImplementedException(); }
        public static float Clamp(float v, float min, float max) { throw new NotImplementedException(); }
        public static float Abs(float f) { throw new NotImplementedException(); }
        public static float Min(float a, float b) { throw new NotImplementedException(); }
        public static int CeilToInt(float f) { throw new NotImplementedException(); }
    }
    public static class Random { public static int Range(int minInclusive, int maxExclusive) { throw new NotImplementedException(); } }
    public static class Application { public static string dataPath { get { throw new NotImplementedException(); } } }
    public static class Debug
    {
        public static void LogWarning(object message) { }
        public static void LogException(Exception exception) { }
    }
    public class GUIContent { public GUIContent(string text) { } public GUIContent(string text, string tooltip) { } }
    public class GUIStyle { }
    public sealed class GUILayoutOption { }
    public static class GUILayout
    {
        public static bool Button(string text, params GUILayoutOption[] options) { throw new NotImplementedException(); }
        public static bool Toggle(bool value, GUIContent content, GUIStyle style, params GUILayoutOption[] options) { throw new NotImplementedException(); }
        public static GUILayoutOption Width(float width) { throw new NotImplementedException(); }
        public static GUILayoutOption Height(float height) { throw new NotImplementedException(); }
    }
}

namespace UnityEngine.SceneManagement
{
    public struct Scene
    {
        public bool IsValid() { throw new NotImplementedException(); }
        public static bool operator ==(Scene a, Scene b) { throw new NotImplementedException(); }
        public static bool operator !=(Scene a, Scene b) { throw new NotImplementedException(); }
        public override bool Equals(object o) { throw new NotImplementedException(); }
        public override int GetHashCode() { throw new NotImplementedException(); }
    }
    public static class SceneManager { public static void MoveGameObjectToScene(GameObject go, Scene scene) { } }
}

namespace UnityEngine.Rendering
{
    public class RenderPipelineAsset : UnityEngine.Object { }
    public static class GraphicsSettings { public static RenderPipelineAsset currentRenderPipeline { get { throw new NotImplementedException(); } } }
    public enum BlendMode { SrcAlpha = 5, OneMinusSrcAlpha = 10 }
    public enum RenderQueue { AlphaTest = 2450, Transparent = 3000 }
}

namespace UnityEditor
{
    using UnityEngine;

    [AttributeUsage(AttributeTargets.Class)] public sealed class InitializeOnLoadAttribute : Attribute { }
    [AttributeUsage(AttributeTargets.Method)]
    public sealed class MenuItem : Attribute
    {
        public MenuItem(string itemName) { }
        public MenuItem(string itemName, bool isValidateFunction) { }
        public MenuItem(string itemName, bool isValidateFunction, int priority) { }
    }
    public static class EditorPrefs
    {
        public static string GetString(string key, string defaultValue) { throw new NotImplementedException(); }
        public static void SetString(string key, string value) { }
        public static bool GetBool(string key, bool defaultValue) { throw new NotImplementedException(); }
        public static void SetBool(string key, bool value) { }
    }
    public static class EditorApplication
    {
        public delegate void CallbackFunction();
        public static CallbackFunction update;
        public static CallbackFunction delayCall;
        public static event Action quitting;
    }
    public static class AssemblyReloadEvents
    {
        public delegate void AssemblyReloadCallback();
        public static event AssemblyReloadCallback beforeAssemblyReload;
    }
    public static class Progress
    {
        [Flags] public enum Options { None = 0 }
        public enum Status { Running, Succeeded, Failed, Canceled, Paused }
        public static int Start(string name, string description = null, Options options = Options.None, int parentId = -1) { throw new NotImplementedException(); }
        public static void Report(int id, float progress, string description) { }
        public static void RegisterCancelCallback(int id, Func<bool> callback) { }
        public static void Finish(int id, Status status = Status.Succeeded) { }
        public static bool Exists(int id) { throw new NotImplementedException(); }
        public static Status GetStatus(int id) { throw new NotImplementedException(); }
        public static int Remove(int id) { throw new NotImplementedException(); }
    }
    [Flags] public enum ImportAssetOptions { Default = 0, ForceUpdate = 1 }
    public static class AssetDatabase
    {
        public static void ImportAsset(string path, ImportAssetOptions options) { }
        public static T LoadAssetAtPath<T>(string path) where T : Object { throw new NotImplementedException(); }
        public static Object LoadMainAssetAtPath(string path) { throw new NotImplementedException(); }
        public static string GetAssetPath(Object asset) { throw new NotImplementedException(); }
        public static void CreateAsset(Object asset, string path) { }
    }
    public static class PrefabUtility
    {
        public static Object InstantiatePrefab(Object assetComponentOrGameObject) { throw new NotImplementedException(); }
        public static GameObject SaveAsPrefabAsset(GameObject instanceRoot, string assetPath) { throw new NotImplementedException(); }
    }
    public class AssetImporter : Object
    {
        public static AssetImporter GetAtPath(string path) { throw new NotImplementedException(); }
        public void SaveAndReimport() { }
    }
    public sealed class TextureImporter : AssetImporter { public bool sRGBTexture { get; set; } }
    public static class EditorUtility
    {
        public static void SetDirty(Object target) { }
        public static bool IsPersistent(Object target) { throw new NotImplementedException(); }
        public static string OpenFilePanelWithFilters(string title, string directory, string[] filters) { throw new NotImplementedException(); }
    }
    [Flags] public enum SelectionMode { Unfiltered = 0, Assets = 16 }
    public static class Selection
    {
        public static GameObject activeGameObject { get; set; }
        public static T[] GetFiltered<T>(SelectionMode mode) { throw new NotImplementedException(); }
    }
    public class SceneView : EditorWindow
    {
        public static SceneView lastActiveSceneView { get { throw new NotImplementedException(); } }
        public Vector3 pivot { get; set; }
    }
    public static class Undo
    {
        public static int GetCurrentGroup() { throw new NotImplementedException(); }
        public static void SetCurrentGroupName(string name) { }
        public static void RegisterCreatedObjectUndo(Object objectToUndo, string name) { }
        public static void DestroyObjectImmediate(Object objectToUndo) { }
        public static void CollapseUndoOperations(int groupIndex) { }
    }
    public class EditorWindow : ScriptableObjectStub
    {
        public static T GetWindow<T>(string title) where T : EditorWindow { throw new NotImplementedException(); }
        public void Show() { }
        public void Repaint() { }
    }
    public class ScriptableObjectStub : Object { }
    public enum MessageType { None, Info, Warning, Error }
    public static class EditorStyles
    {
        public static GUIStyle boldLabel { get { throw new NotImplementedException(); } }
        public static GUIStyle miniLabel { get { throw new NotImplementedException(); } }
        public static GUIStyle wordWrappedMiniLabel { get { throw new NotImplementedException(); } }
        public static GUIStyle miniButton { get { throw new NotImplementedException(); } }
    }
    public static class EditorGUIUtility { public static void PingObject(Object obj) { } }
    public static class EditorGUI
    {
        public static void BeginChangeCheck() { }
        public static bool EndChangeCheck() { throw new NotImplementedException(); }
        public static void ProgressBar(Rect position, float value, string text) { }
        public class DisabledScope : IDisposable { public DisabledScope(bool disabled) { } public void Dispose() { } }
    }
    public static class EditorGUILayout
    {
        public class HorizontalScope : IDisposable { public HorizontalScope(params GUILayoutOption[] options) { } public void Dispose() { } }
        public static Vector2 BeginScrollView(Vector2 scrollPosition, params GUILayoutOption[] options) { throw new NotImplementedException(); }
        public static void EndScrollView() { }
        public static void LabelField(string label, GUIStyle style, params GUILayoutOption[] options) { }
        public static string TextField(string label, string text, params GUILayoutOption[] options) { throw new NotImplementedException(); }
        public static string PasswordField(GUIContent label, string password, params GUILayoutOption[] options) { throw new NotImplementedException(); }
        public static int Popup(string label, int selectedIndex, string[] displayedOptions, params GUILayoutOption[] options) { throw new NotImplementedException(); }
        public static int IntField(string label, int value, params GUILayoutOption[] options) { throw new NotImplementedException(); }
        public static int IntSlider(string label, int value, int leftValue, int rightValue, params GUILayoutOption[] options) { throw new NotImplementedException(); }
        public static float FloatField(string label, float value, params GUILayoutOption[] options) { throw new NotImplementedException(); }
        public static long LongField(string label, long value, params GUILayoutOption[] options) { throw new NotImplementedException(); }
        public static bool ToggleLeft(string label, bool value, params GUILayoutOption[] options) { throw new NotImplementedException(); }
        public static void HelpBox(string message, MessageType type) { }
        public static void Space() { }
        public static Rect GetControlRect(params GUILayoutOption[] options) { throw new NotImplementedException(); }
    }
}
