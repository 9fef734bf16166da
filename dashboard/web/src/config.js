// What the server tells the page: the CSRF token, the signed-in user, and whether it runs --dev.
// It sits in <meta name="littlestats" content='{...}'> (a meta tag, so no inline script is needed).
function read() {
  const base = { csrf: '', user: null, dev: false };
  const meta = document.querySelector('meta[name=littlestats]');
  if (!meta || !meta.content) return base;
  try {
    return { ...base, ...JSON.parse(meta.content) };
  } catch {
    return base;
  }
}

export const config = read();
