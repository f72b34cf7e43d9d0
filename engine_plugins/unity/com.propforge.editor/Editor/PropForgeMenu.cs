// "Assets > Generate 3D from image" on selected Texture2D assets.
using System.Collections.Generic;
using UnityEditor;
using UnityEngine;

namespace PropForge.Editor
{
    internal static class PropForgeMenu
    {
        const string Item = "Assets/Generate 3D from image";

        [MenuItem(Item, true)]
        static bool Validate()
        {
            return SelectedImages().Count > 0;
        }

        [MenuItem(Item, false, 30)]
        static void Generate()
        {
            var images = SelectedImages();
            PropForgeWindow.Open();
            PropForgeWindow.GenerateFor(images);
        }

        internal static List<string> SelectedImages()
        {
            var paths = new List<string>();
            foreach (var obj in Selection.GetFiltered<Texture2D>(SelectionMode.Assets))
            {
                string path = AssetDatabase.GetAssetPath(obj);
                string ext = System.IO.Path.GetExtension(path).ToLowerInvariant();
                if (ext == ".png" || ext == ".jpg" || ext == ".jpeg" || ext == ".webp") paths.Add(path);
            }
            return paths;
        }
    }
}
