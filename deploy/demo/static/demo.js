// Demo site behaviour: SPA navigation with history.pushState between the sections of
// the page, the CTA filling the form, and the signup form's hidden anonymous_id / session_id
// fields read from the beacon, so the server's conversion hook can call the stitcher.
(() => {
  const form = document.getElementById("signup");
  // Show the section whose data-route is the current path (else the landing section).
  const show = () => {
    const sections = [...document.querySelectorAll("section[data-route]")];
    const current = sections.find(s => s.dataset.route === location.pathname) || sections[0];
    sections.forEach(s => { s.hidden = s !== current });
    document.title = current.dataset.title;
    document.querySelectorAll("a[data-spa]").forEach(a => a.classList.toggle("active", a.pathname === location.pathname));
  };
  document.addEventListener("click", e => {
    const a = e.target.closest("a[data-spa]");
    if (!a || e.metaKey || e.ctrlKey || e.shiftKey || e.button !== 0) return;
    e.preventDefault();
    if (a.href !== location.href) history.pushState({}, "", a.href); // the beacon sends a page_view
    show();
  });
  addEventListener("popstate", show);
  document.querySelectorAll("[data-cs-event=cta_click]").forEach(b => b.addEventListener("click", () => {
    form.plan.value = b.dataset.csPropPlan;
    form.email.focus();
  }));
  // The beacon may be blocked or off (Do Not Track): the form then posts empty ids.
  const fill = () => {
    const cs = window.clickstream;
    if (!cs || !cs.anonymousId) return;
    form.anonymous_id.value = cs.anonymousId();
    form.session_id.value = cs.sessionId();
  };
  if (form) {
    fill();
    form.addEventListener("submit", fill);
  }
})();
