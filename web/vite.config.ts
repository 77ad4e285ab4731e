import { defineConfig } from 'vite';
import preact from '@preact/preset-vite';

// `npm run dev` serves the UI with hot reload and proxies the API to a
// running `tern serve` (TERN_API, default http://127.0.0.1:3000).
const api = process.env.TERN_API ?? 'http://127.0.0.1:3000';

export default defineConfig({
  plugins: [preact()],
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    target: 'es2020',
    reportCompressedSize: false,
    chunkSizeWarningLimit: 400,
  },
  server: {
    proxy: {
      '/api': { target: api, changeOrigin: true },
      '/metrics': { target: api, changeOrigin: true },
      '/healthz': { target: api, changeOrigin: true },
    },
  },
});
