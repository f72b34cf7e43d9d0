// JobRunner reports on worker threads; Unity APIs need the main thread. Actions queued here run
// on the next editor update.
using System;
using System.Collections.Concurrent;
using UnityEditor;
using UnityEngine;

namespace PropForge.Editor
{
    [InitializeOnLoad]
    internal static class MainThread
    {
        static readonly ConcurrentQueue<Action> Queue = new ConcurrentQueue<Action>();

        static MainThread()
        {
            EditorApplication.update += Drain;
        }

        public static void Post(Action action)
        {
            Queue.Enqueue(action);
        }

        static void Drain()
        {
            Action a;
            int budget = 256;
            while (budget-- > 0 && Queue.TryDequeue(out a))
            {
                try { a(); }
                catch (Exception e) { Debug.LogException(e); }
            }
        }
    }
}
