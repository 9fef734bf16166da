// Placeholder until the dashboard's first build replaces dashboard/static.
const config = JSON.parse(document.querySelector("meta[name=littlestats]").content);
document.getElementById("app").textContent = config.user ? `Logged in as ${config.user.email}` : "LittleStats";
