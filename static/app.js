// labhub: small progressive enhancements; every page works without this file.
"use strict";
document.addEventListener("click", (ev) => {
  const copy = ev.target.closest("[data-copy]");
  if (copy) {
    const input = document.getElementById(copy.dataset.copy);
    input.select();
    navigator.clipboard?.writeText(input.value).then(() => { copy.textContent = "Copied"; });
    return;
  }
  const back = ev.target.closest("[data-back]");
  if (back && history.length > 1) {
    ev.preventDefault();
    history.back();
  }
});
document.addEventListener("submit", (ev) => {
  const msg = ev.target.dataset.confirm;
  if (msg && !window.confirm(msg)) ev.preventDefault();
});
