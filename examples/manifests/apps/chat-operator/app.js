// The operator workplace: a placeholder bundle shipped as the roleapp's archive.
document.getElementById("app").textContent = "Chat operator workplace";
