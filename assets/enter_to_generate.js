() => {
  const handle = (event) => {
    const box = event.target.closest && event.target.closest("[id$='-prompt']");
    if (!box || event.key !== "Enter" || event.isComposing) return;
    event.stopPropagation();
    if (event.shiftKey) return;
    event.preventDefault();
    if (event.type === "keydown") document.getElementById(box.id.replace(/-prompt$/, "-generate"))?.click();
  };
  document.addEventListener("keydown", handle, true);
  document.addEventListener("keypress", handle, true);
}
