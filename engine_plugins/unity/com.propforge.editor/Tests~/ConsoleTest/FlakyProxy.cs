// A loopback TCP proxy in front of the real server that cuts one connection after N bytes from the
// server: a real network failure mid-stream, to test SSE reconnect and Range resume end to end.
using System;
using System.IO;
using System.Net;
using System.Net.Sockets;
using System.Threading;
using System.Threading.Tasks;

namespace PropForge.ConsoleTest
{
    sealed class FlakyProxy : IDisposable
    {
        readonly TcpListener listener;
        readonly int targetPort;
        int cutNext = -1;
        int connections;

        public FlakyProxy(int targetPort)
        {
            this.targetPort = targetPort;
            listener = new TcpListener(IPAddress.Loopback, 0);
            listener.Start();
            Task.Run(AcceptLoop);
        }

        public int Port { get { return ((IPEndPoint)listener.LocalEndpoint).Port; } }
        public int Connections { get { return Volatile.Read(ref connections); } }

        /// <summary>The next new connection is closed after this many bytes from the server.</summary>
        public void CutNextConnectionAfter(int bytes) { Volatile.Write(ref cutNext, bytes); }

        async Task AcceptLoop()
        {
            while (true)
            {
                TcpClient client;
                try { client = await listener.AcceptTcpClientAsync(); }
                catch (Exception) { return; }  // listener stopped
                int cut = Interlocked.Exchange(ref cutNext, -1);
                Interlocked.Increment(ref connections);
                Forget(Handle(client, cut));  // runs on; its failures only end that connection
            }
        }

        static void Forget(Task t)
        {
            t.ContinueWith(x => x.Exception, TaskContinuationOptions.OnlyOnFaulted);
        }

        async Task Handle(TcpClient client, int cut)
        {
            using (client)
            using (var server = new TcpClient())
            {
                try { await server.ConnectAsync(IPAddress.Loopback, targetPort); }
                catch (Exception) { return; }
                var up = Pump(client.GetStream(), server.GetStream(), -1);
                var down = Pump(server.GetStream(), client.GetStream(), cut);
                await Task.WhenAny(up, down);
            }
        }

        static async Task Pump(Stream from, Stream to, long limit)
        {
            var buf = new byte[8192];
            long total = 0;
            while (true)
            {
                int n;
                try { n = await from.ReadAsync(buf, 0, buf.Length); }
                catch (Exception) { return; }
                if (n <= 0) return;
                if (limit >= 0 && total + n >= limit)
                {
                    try { await to.WriteAsync(buf, 0, (int)(limit - total)); } catch (Exception) { }
                    return;  // closing both sockets: the client sees the connection drop mid-response
                }
                try { await to.WriteAsync(buf, 0, n); }
                catch (Exception) { return; }
                total += n;
            }
        }

        public void Dispose() { listener.Stop(); }
    }
}
