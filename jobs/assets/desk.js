// reckon desk: the little the pages do in the browser. Every page works without it.
document.addEventListener("DOMContentLoaded", () => {
  // Show what the chosen action means before it is submitted.
  for (const [select, text] of [["action", "meaning"], ["bulk-action", "bulk-meaning"]]) {
    const action = document.getElementById(select);
    const meaning = document.getElementById(text);
    if (action && meaning) {
      const show = () => { meaning.textContent = action.selectedOptions[0].dataset.meaning; };
      action.addEventListener("change", show);
      show();
    }
  }
  // A bulk decision on everything the filter matches says how many, and asks first.
  const bulk = document.getElementById("bulk");
  if (bulk) {
    bulk.addEventListener("submit", (e) => {
      const all = e.submitter && e.submitter.value === "all";
      const picked = document.querySelectorAll("input.pick:checked").length;
      const question = all ? bulk.dataset.all : `Decide the ${picked} selected differences?`;
      if (!window.confirm(question)) e.preventDefault();
    });
  }
});
