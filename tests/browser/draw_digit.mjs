// Draws a "1" and a "0" on the draw-a-digit page (serving/ui/draw.html) with mouse strokes
// in headless Chromium and prints, as one JSON line, what the page shows for each: the
// top three classes with their probabilities and the model version.
//
//   node draw_digit.mjs URL            (CHROMIUM=/path overrides /usr/bin/chromium;
//                                       SCREENSHOT=file.png saves the page after the "0";
//                                       PICK_MODEL=NAME then chooses that model, a non-digit
//                                       one, and clicks its first sample image)
//
// Run by tests/serving/test_ui_browser.py; playwright-core comes from package-lock.json.
import { chromium } from "playwright-core";

const url = process.argv[2];
if (!url) {
  console.error("usage: node draw_digit.mjs URL");
  process.exit(2);
}

// Strokes in pad coordinates (the canvas is 280x280), as a person draws them.
function one() {
  const points = [];
  for (let i = 0; i <= 24; i++) points.push([142 - i * 0.5, 50 + i * 7.5]);
  return [points];
}
function zero() {
  const points = [];
  for (let i = 0; i <= 48; i++) {
    const angle = -Math.PI / 2 - (2 * Math.PI * i) / 48;  // from the top, anticlockwise
    points.push([140 + 62 * Math.cos(angle), 140 + 88 * Math.sin(angle)]);
  }
  return [points];
}

async function draw(page, strokes) {
  await page.click("#clear");
  await page.waitForFunction(() => document.querySelector("#result").dataset.state === "empty");
  const box = await page.locator("#pad").boundingBox();
  for (const points of strokes) {
    const at = ([x, y]) => [box.x + (x * box.width) / 280, box.y + (y * box.height) / 280];
    await page.mouse.move(...at(points[0]));
    await page.mouse.down();
    for (const point of points.slice(1)) await page.mouse.move(...at(point), { steps: 2 });
    await page.mouse.up();
  }
  // The page predicts when a stroke ends; wait for the answer to the last one.
  return shown(page);
}

async function pick(page, model) {
  await page.selectOption("#model", model);
  await page.locator("#samples canvas").first().click();
  return {
    ...(await shown(page)),
    draw_panel_hidden: await page.locator("#draw-panel").isHidden(),
    samples: await page.locator("#samples canvas").count(),
  };
}

async function shown(page) {
  await page.waitForFunction(() => {
    const state = document.querySelector("#result").dataset.state;
    return state === "done" || state === "error";
  });
  return page.evaluate(() => ({
    state: document.querySelector("#result").dataset.state,
    status: document.querySelector("#status").textContent,
    version: document.querySelector("#version").textContent,
    top3: [...document.querySelectorAll("#top3 li")].map((li) => ({
      class: Number(li.dataset.class),
      name: li.dataset.name,
      probability: Number(li.dataset.probability),
    })),
    sent: (() => {
      const c = document.querySelector("#preview").getContext("2d");
      const data = c.getImageData(0, 0, 28, 28).data;
      const rows = [];
      for (let y = 0; y < 28; y++) {
        const row = [];
        for (let x = 0; x < 28; x++) row.push(data[(y * 28 + x) * 4]);
        rows.push(row);
      }
      return rows;
    })(),
  }));
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--force-device-scale-factor=1"],
});
try {
  const page = await browser.newPage({ viewport: { width: 900, height: 560 } });
  const requests = [];
  page.on("request", (request) => requests.push(request.url()));
  await page.goto(url);
  // The first model that reads digits (the page starts on the first by name).
  const digits = await page.evaluate(
    () => JSON.parse(document.querySelector("#ui-models").textContent).find((m) => m.digits)?.name,
  );
  if (!digits) throw new Error("the page lists no model that reads digits");
  await page.selectOption("#model", digits);
  const results = { one: await draw(page, one()), zero: await draw(page, zero()) };
  if (process.env.SCREENSHOT) await page.screenshot({ path: process.env.SCREENSHOT });
  if (process.env.PICK_MODEL) results.picked = await pick(page, process.env.PICK_MODEL);
  const origin = new URL(url).origin;
  results.foreign_requests = requests.filter((r) => !r.startsWith(origin));
  console.log(JSON.stringify(results));
} finally {
  await browser.close();
}
